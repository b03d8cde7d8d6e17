"""Converge this host's networking once, outside the agent (operators, tests)::

    python -m nubes.agent.network converge --run-dir DIR [--options JSON] < desired.json
    python -m nubes.agent.network cleanup --run-dir DIR [--options JSON]

``desired.json`` is a :class:`~nubes.domain.netdesired.HostNetworks` as JSON. The report
(changes made, errors) is printed as JSON; the exit code is 1 when there were errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from nubes.agent.network.agent import NetworkAgent, Options
from nubes.domain.netdesired import from_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nubes.agent.network")
    parser.add_argument("action", choices=("converge", "cleanup"))
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--options", type=json.loads, default=None, help="network options, JSON")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(message)s")
    try:
        options = Options.parse(args.run_dir, args.options)
        desired = from_json(json.load(sys.stdin)) if args.action == "converge" else None
    except (ValueError, TypeError) as exc:
        print(f"nubes network: {exc}", file=sys.stderr)
        return 2
    agent = NetworkAgent(options)
    report = agent.converge(desired) if desired is not None else agent.cleanup()
    json.dump({"changes": report.changes, "errors": report.errors}, sys.stdout)
    sys.stdout.write("\n")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
