"""CLI: `python -m replay serve DIR [--port N] [--speed X]` runs the replay server alone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from pathlib import Path

from replay.recordings import load_recordings
from replay.server import ReplayServer



async def _serve(directory: Path, port: int, speed: float) -> None:
    recordings = load_recordings(directory)
    server = ReplayServer(recordings, speed=speed, port=port)
    await server.start()
    connections = sum(len(recording.connections) for recording in recordings.values())
    bodies = sum(len(recording.rest) for recording in recordings.values())
    print(
        f"replay server on {server.base_url} ({connections} connections, {bodies} REST bodies)",
        flush=True,
    )
    try:
        await asyncio.Event().wait()  # until Ctrl-C cancels us
    finally:
        await server.stop()


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m replay",
        description=ReplayServer.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a recordings folder until Ctrl-C")
    serve.add_argument("directory", type=Path, help="folder with EX.0 / EX.ws.C.R files")
    serve.add_argument("--port", type=int, default=8123, help="port to bind (default 8123)")
    serve.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="0 = as fast as possible (default); 1 = recorded pace; 2 = twice as fast",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.directory, args.port, args.speed))


if __name__ == "__main__":
    _main()
