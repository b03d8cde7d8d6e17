"""Entry point of a controller process: ``python -m nubes.controller.run --state-dir DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nubes.config import load_settings
from nubes.controller.bootstrap import initialise
from nubes.controller.server import serve
from nubes.domain.errors import NubesError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nubes-controller")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--port", type=int)
    parser.add_argument("--host")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.state_dir, port=args.port, listen_host=args.host)
        initialise(settings)
    except NubesError as exc:
        print(f"nubes controller: {exc}", file=sys.stderr)
        return 1
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
