"""The agent process: join (or re-join) the controller, heartbeat, watch and reconcile.

``python -m nubes.agent.run --state-dir DIR [--url URL --token T] [--driver auto|qemu|lxc|fake]``
The first run needs the URL and a join token; the identity it receives (name, credential) is
kept in ``DIR/agent.json`` (0600), so a restarted agent keeps its identity and needs neither.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from nubes.agent import facts
from nubes.agent.client import ControllerClient, ControllerError
from nubes.agent.hypervisors.base import Hypervisor, HypervisorError
from nubes.agent.hypervisors.loader import choose
from nubes.agent.images import ImageCache
from nubes.agent.reconcile import Reconciler

log = logging.getLogger("nubes.agent")
IDENTITY_FILE = "agent.json"
RESYNC_SECONDS = 10.0
#: after starting a guest, look every second for this long (console, crashes during boot)
BOOT_WATCH_SECONDS = 20.0


@dataclass
class Identity:
    url: str
    host_id: str
    name: str
    credential: str
    driver: str

    @classmethod
    def load(cls, state_dir: Path) -> Identity | None:
        path = state_dir / IDENTITY_FILE
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / IDENTITY_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.__dict__, handle)
        os.replace(tmp, path)


class AgentError(Exception):
    pass


class Agent:
    def __init__(
        self,
        state_dir: Path,
        identity: Identity,
        driver: Hypervisor,
        client: ControllerClient,
        config: dict[str, Any],
    ) -> None:
        self.state_dir = state_dir
        self.identity = identity
        self.driver = driver
        self.client = client
        self.config = config
        self.reconciler = Reconciler(driver, client, ImageCache(state_dir / "images", client))
        self.stopping = threading.Event()

    @classmethod
    def start(
        cls,
        state_dir: Path,
        *,
        url: str | None = None,
        token: str | None = None,
        driver: str = "auto",
        name: str | None = None,
        http: httpx.Client | None = None,
        driver_options: dict[str, Any] | None = None,
    ) -> Agent:
        state_dir.mkdir(parents=True, exist_ok=True)
        known = Identity.load(state_dir)
        if known is None and not (url and token):
            raise AgentError(
                f"this node has not joined yet ({state_dir / IDENTITY_FILE} is missing): "
                "give the controller URL and a join token (`nubes host token create`)"
            )
        chosen = choose(known.driver if known and driver == "auto" else driver)
        hypervisor = chosen(state_dir / "driver" / chosen.name, **(driver_options or {}))
        caps = hypervisor.capabilities()
        join_facts = {
            **facts.facts(state_dir),
            "driver": chosen.name,
            "capabilities": {
                "image_kinds": sorted(k.value for k in caps.image_kinds),
                "accelerated": caps.accelerated,
                "pause": caps.pause,
                "vnc": caps.vnc,
                **caps.details,
            },
        }
        if known is not None:
            client = ControllerClient(url or known.url, known.credential, http=http)
            answer = client.join(join_facts, None, None)
            identity = Identity(
                url or known.url, known.host_id, answer["name"], known.credential, chosen.name
            )
        else:
            assert url is not None
            client = ControllerClient(url, http=http)
            answer = client.join(join_facts, token, name)
            identity = Identity(
                url, answer["host_id"], answer["name"], answer["credential"], chosen.name
            )
            client.credential = identity.credential
        identity.save(state_dir)
        log.info("joined %s as %s (driver %s)", identity.url, identity.name, chosen.name)
        return cls(state_dir, identity, hypervisor, client, answer["config"])

    def heartbeat_loop(self) -> None:
        every = float(self.config.get("heartbeat_seconds", 5))
        while not self.stopping.is_set():
            try:
                self.client.heartbeat(facts.metrics(self.state_dir, self.reconciler.running))
            except ControllerError as exc:
                log.warning("heartbeat failed: %s", exc)
            self.stopping.wait(every)

    def watch_loop(self) -> None:
        seen, backoff = -1, 1.0
        while not self.stopping.is_set():
            try:
                booting = time.monotonic() - self.reconciler.last_start < BOOT_WATCH_SECONDS
                wait = 0.0 if seen < 0 else (1.0 if booting else RESYNC_SECONDS)
                desired = self.client.desired(seen, wait)
                seen = int(desired["version"])
                self.reconciler.reconcile_all(desired["instances"])
                backoff = 1.0
            except ControllerError as exc:
                log.warning("watch failed: %s (retrying in %.0f s)", exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def run(self) -> None:
        beat = threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        try:
            self.watch_loop()
        finally:
            self.stopping.set()
            self.reconciler.close()
            with contextlib.suppress(ControllerError):
                self.client.heartbeat({}, leaving=True)

    def stop(self) -> None:
        self.stopping.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nubes-agent")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--name")
    parser.add_argument("--driver", default="auto")
    parser.add_argument(
        "--driver-options",
        type=json.loads,
        default=None,
        help='JSON keyword arguments for the driver, e.g. \'{"delays": {"start": 2}}\' (fake)',
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        agent = Agent.start(
            args.state_dir,
            url=args.url,
            token=args.token,
            driver=args.driver,
            name=args.name,
            driver_options=args.driver_options,
        )
    except (AgentError, ControllerError, HypervisorError) as exc:
        print(f"nubes agent: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    agent.run()
    return 0


if __name__ == "__main__":
    time.tzset()
    sys.exit(main())
