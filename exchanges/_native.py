"""The per-message path compiled with mypyc, and the pure-Python fallback: one set of sources.

The modules in `COMPILED` are ordinary typed Python. `python exchanges/_native.py build`
(run by `make run`, `make test` and `.ci/run` through the Makefile) compiles them in place
with mypyc (a C extension next to each source, and their shared library `_compiled__mypyc`),
builds the hand-written C in `C_EXTENSIONS` beside them (the book's sides, `exchanges/_book.c`,
whose pure twin is `exchanges/book.py`'s BookSide), and records a hash of all their sources in
`exchanges/_native.stamp`. Where no compiler, no mypy or no zlib header is available the build
says so and the pure modules run: nothing else changes. Compiled means all of it (mypyc's
modules and the C sides), pure none of it (the C extensions are not imported then).

At import (`install()`, first thing in `exchanges/__init__.py`) the compiled modules are used
only when they were built from exactly the sources on disk: a developer who edits one of
them runs the pure modules, with one warning, until the next build (which `make test` does).
`KORCOIN_PURE_PYTHON=1` forces the pure modules. It is an import-time switch, not a KCS_*
setting: it must be decided before any connector module is imported, which is before
settings (and their .env file) are read; it is a developer's and the benchmark's switch,
never a deployment's (both paths publish byte-identical records, tests/exchanges/
test_native.py).

Why compile: the pure path was tuned until no single hot spot was left, its cost spread over
connector, book and publisher; here the interpreter, not a library, was the bottleneck.
Measured (bench/parse.py --rounds 3, one run, 2026-11-30), compiled over pure msg/s:
Bithumb 1.37x, Korbit 1.36x, Bitfinex 1.32x, Bybit 1.31x, Binance 1.30x, Coinbase 1.29x,
Coinone 1.11x, Kraken 1.10x, OKX 1.09x; geometric mean of the 11 venues 1.19x (decode floor
ratio 4.20x -> 3.52x). What remains is CPython's object work (perf, compiled Coinbase: 75%
in libpython, 7% in the compiled code), which compiling cannot remove. Records (`records/`)
stay interpreted: building one costs 0.11-0.12 us, 3% of a Coinbase pass.

This module must stay importable on its own (standard library only): the build runs it as a
script, without importing the package it builds.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

__all__ = ["COMPILED", "C_EXTENSIONS", "PURE_ENV", "install", "state", "build"]

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
STAMP = PACKAGE / "_native.stamp"
PURE_ENV = "KORCOIN_PURE_PYTHON"
GROUP = "exchanges._compiled"  # the shared library: exchanges/_compiled__mypyc.<ext>

# Everything a frame goes through between `orjson.loads` and `Publisher.pending` that runs
# faster compiled. Not compiled: session, outbox, metrics, history, listing (I/O and asyncio,
# not per message); the venues' msgspec Structs (`<venue>_messages.py`: mypyc builds the
# classes of a compiled module without their class keywords, `tag=` and `gc=False`, and with
# annotations msgspec cannot read); Upbit and HTX, measured no faster compiled (0.92-0.99x
# of pure: their time is in msgspec's and zlib's C, and CPython's own specialized reads of
# Struct fields beat a compiled module's generic ones).
COMPILED = tuple(f"exchanges.{name}" for name in (
    "values", "symbols", "codecs", "book", "publisher", "base",
    "bithumb", "coinone", "korbit", "binance", "bybit", "okx",
    "coinbase", "kraken", "bitfinex"))

# Hand-written C built beside them (module -> its sources, libraries it links): the book's
# sides (exchanges/book.py says why). Part of the same build, stamp and switch: compiled
# means all of it, pure means none of it.
C_EXTENSIONS = {"exchanges._book": (("exchanges/_book.c",), ("z",))}

# Set by install(): "compiled", or why the pure modules run.
_state = "pure: not installed"


def source_path(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def source_hash() -> str:
    """The hash a build records and an import checks: every compiled module's source, and the
    interpreter the extensions were built for."""
    digest = hashlib.sha256(f"{sys.implementation.cache_tag} {GROUP}".encode())
    for module in COMPILED:
        digest.update(module.encode() + b"\0" + source_path(module).read_bytes() + b"\0")
    for module, (sources, _) in C_EXTENSIONS.items():
        for source in sources:
            digest.update(module.encode() + b"\0" + (ROOT / source).read_bytes() + b"\0")
    return digest.hexdigest()


def built() -> bool:
    """True when an extension of every compiled module, and their shared library, are on
    disk for this interpreter."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    return all(any(source_path(m).with_suffix(s).exists() for s in suffixes)
               for m in (*COMPILED, *C_EXTENSIONS, f"{GROUP}__mypyc"))


def state() -> str:
    """"compiled" when the compiled modules run, else why the pure ones do."""
    return _state


class _PureFinder(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' sources ahead of their extensions (which the default
    finder would prefer), and refuses the C extensions (their importers fall back)."""

    def find_spec(self, fullname: str, path: object = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in C_EXTENSIONS:
            raise ModuleNotFoundError(f"{fullname}: {_state}", name=fullname)
        if fullname not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def install() -> str:
    """Decide, once per process, whether the compiled or the pure modules are imported."""
    global _state
    if any(isinstance(finder, _PureFinder) for finder in sys.meta_path) or \
            _state != "pure: not installed":
        return _state
    if not built():
        # the finder still goes in: extensions an earlier or partial build left beside the
        # sources would otherwise be imported, stale, in place of the pure modules
        _state = "pure: not built (python exchanges/_native.py build)"
    elif os.environ.get(PURE_ENV, "") not in ("", "0"):
        _state = f"pure: {PURE_ENV} is set"
    else:
        recorded = STAMP.read_text().strip() if STAMP.exists() else ""
        if recorded == source_hash():
            try:  # the compiled modules' shared library: it loads, or none of them will
                importlib.import_module(f"{GROUP}__mypyc")
            except ImportError as exc:
                _state = f"pure: the compiled modules do not load ({exc})"
            else:
                _state = "compiled"
                return _state
        else:
            _state = "pure: the compiled modules are stale (sources changed since the build)"
        warnings.warn(f"exchanges: {_state}; running the pure-Python modules until "
                      "`make test` or `python exchanges/_native.py build` rebuilds them",
                      RuntimeWarning, stacklevel=2)
    sys.meta_path.insert(0, _PureFinder())
    return _state


def build() -> int:
    """Compile `COMPILED` in place unless the stamp says they are current; 0 even when no
    compiler is there (the pure modules run), 1 when mypyc refuses the sources."""
    current = source_hash()
    if built() and STAMP.exists() and STAMP.read_text().strip() == current:
        return 0
    STAMP.unlink(missing_ok=True)
    try:
        from mypyc.build import mypycify
        from setuptools import Extension, setup  # type: ignore[import-untyped]
    except ImportError as exc:
        print(f"exchanges/_native.py: not compiled ({exc}); the pure-Python modules run")
        return 0
    os.chdir(ROOT)
    warnings.simplefilter("ignore")  # setuptools' notes on pyproject.toml: not this build's
    sources = [str(source_path(m).relative_to(ROOT)) for m in COMPILED]
    try:
        # type-checked with what they import, whose own errors are not theirs to report
        extensions = mypycify(["--follow-imports=silent", *sources], group_name=GROUP,
                              opt_level="3")
    except SystemExit as exc:  # mypy's errors, printed above: the sources need fixing
        print(f"exchanges/_native.py: mypyc refused the sources (exit {exc.code})")
        return 1
    extensions += [Extension(module, list(sources), libraries=list(libraries),
                             extra_compile_args=["-O3"])
                   for module, (sources, libraries) in C_EXTENSIONS.items()]
    try:
        setup(name="kcs-exchanges-native", ext_modules=extensions,
              script_args=["--quiet", "build_ext", "--inplace"])
    except (SystemExit, Exception) as exc:  # no C compiler or no Python headers here
        print(f"exchanges/_native.py: not compiled ({exc}); the pure-Python modules run")
        return 0
    STAMP.write_text(current + "\n")
    return 0


if __name__ == "__main__":
    # run as a script: its own directory must not shadow the standard library (codecs.py)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PACKAGE]
    if sys.argv[1:] != ["build"]:
        sys.exit(f"usage: {sys.argv[0]} build")
    sys.exit(build())
