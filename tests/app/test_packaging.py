"""The installed distribution holds every package of the repository: `faust -A app worker`
run through the installed `faust` script (whose sys.path has no repository root) imports
them from the install, so a package left out of pyproject.toml breaks the worker."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch

from tests.support import REPO


def test_every_top_level_package_is_installed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted(p.parent.name for p in REPO.glob("*/__init__.py")
                      if p.parent.name != "tests")
    assert packages, "no packages found"
    missing = [p for p in packages if not any(fnmatch(p, pattern) for pattern in include)]
    assert not missing, f"packages missing from pyproject.toml's include: {missing}"
