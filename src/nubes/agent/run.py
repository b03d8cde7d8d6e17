"""The agent process: join (or re-join) the controller, heartbeat, watch and reconcile.

``python -m nubes.agent.run --state-dir DIR [--url URL --token T] [--driver auto|qemu|lxc|fake]``
The first run needs the URL and a join token; the identity it receives (name, credential) is
kept in ``DIR/agent.json`` (0600), so a restarted agent keeps its identity and needs neither.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from nubes.agent import facts
from nubes.agent.client import ControllerClient, ControllerError
from nubes.agent.hypervisors.base import Hypervisor, HypervisorError
from nubes.agent.hypervisors.loader import choose
from nubes.agent.images import ImageCache
from nubes.agent.network import NetworkAgent, Options
from nubes.agent.probes import DEFAULT_TIMEOUT, InstalledProbes
from nubes.agent.reconcile import Reconciler, parse_networks

log = logging.getLogger("nubes.agent")
IDENTITY_FILE = "agent.json"
RUN_ROOT = Path("/run/nubes-agent")
RESYNC_SECONDS = 10.0
#: read the whole desired state at least this often, even when told "unchanged"
FULL_READ_SECONDS = 60.0
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


def network_run_dir(state_dir: Path) -> Path:
    """Where the network agent keeps dnsmasq's files and the metadata proxies'. dnsmasq reads
    its hosts file after dropping to ``nobody``, so every directory above it must be
    traversable — and the state dir is not (0700: the database is in it). As root: under
    /run, one directory per state dir (two agents on one machine never share one); else in
    the state dir (unprivileged runs do no networking anyway)."""
    if os.geteuid() != 0:
        return state_dir / "network"
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return RUN_ROOT / digest  # made (0755 all the way) when dnsmasq first needs it


class Agent:
    def __init__(
        self,
        state_dir: Path,
        identity: Identity,
        driver: Hypervisor,
        client: ControllerClient,
        config: dict[str, Any],
        network: NetworkAgent | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.identity = identity
        self.driver = driver
        self.client = client
        self.config = config
        self.reconciler = Reconciler(
            driver, client, ImageCache(state_dir / "images", client), network=network
        )
        self.monitor = self._monitor()
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
        network_options: dict[str, Any] | None = None,
    ) -> Agent:
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            network_settings = Options.parse(network_run_dir(state_dir), network_options)
        except (TypeError, ValueError) as exc:
            raise AgentError(f"--network-options: {exc}") from exc
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
        # VXLAN's source address, unless configured: the one that routes to the controller.
        toward = httpx.URL(identity.url).host or None
        network = NetworkAgent(
            replace(network_settings, toward=toward, host_credential=identity.credential)
        )
        return cls(state_dir, identity, hypervisor, client, answer["config"], network)

    def _monitor(self) -> facts.Monitor:
        """Built-in metrics and the operator's probes. Datastores: the state dir is
        ``default``; the controller's config may name more (``{"datastores": {name: path}}``)."""
        kind = self.driver.name
        datastores = {facts.DEFAULT_DATASTORE: self.state_dir}
        datastores.update({k: Path(v) for k, v in self.config.get("datastores", {}).items()})
        probes = InstalledProbes(
            self.state_dir,
            kind,
            timeout=float(self.config.get("probe_timeout_seconds", DEFAULT_TIMEOUT)),
            env={
                "NUBES_HYPERVISOR": kind,
                "NUBES_STATE_DIR": str(self.state_dir),
                "NUBES_DRIVER_DIR": str(self.driver.state_dir),
            },
        )
        host = facts.HostKind(kind, self.driver.capabilities().accelerated)
        return facts.Monitor(host, datastores, probes)

    def beat(self) -> bool:
        """One monitoring cycle: measure, run the probes, heartbeat, and fetch the probes the
        controller says to have. True when new probes were installed (run them at once)."""
        metrics, errors = self.monitor.collect(self.reconciler.running)
        probes = self.monitor.probes
        try:
            answer = self.client.heartbeat(
                metrics, probe_errors=errors, probes_version=probes.version
            )
        except ControllerError as exc:
            log.warning("heartbeat failed: %s", exc)
            return False
        wanted = answer.get("probes_version")
        if not isinstance(wanted, str) or wanted == probes.version:
            return False
        installed = probes.update(self.client, wanted)
        if probes.install_error:
            log.warning("%s", probes.install_error)
        else:
            log.info(
                "installed probes version %s: %s", probes.version[:12], sorted(probes.probes())
            )
        return installed

    def heartbeat_loop(self) -> None:
        every = float(self.config.get("heartbeat_seconds", 5))
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                again = self.beat()
            except Exception:  # monitoring must outlive any one bad cycle
                log.exception("monitoring cycle failed")
                again = False
            if not again:
                self.stopping.wait(max(0.0, every - (time.monotonic() - started)))

    def watch_loop(self) -> None:
        seen, backoff = -1, 1.0
        instances: list[dict[str, Any]] = []
        networks = None
        full_read_at = 0.0
        while not self.stopping.is_set():
            try:
                booting = time.monotonic() - self.reconciler.last_start < BOOT_WATCH_SECONDS
                if time.monotonic() - full_read_at > FULL_READ_SECONDS:
                    seen = -1  # changes made through another controller wake nobody here
                wait = 0.0 if seen < 0 else (1.0 if booting else RESYNC_SECONDS)
                desired = self.client.desired(seen, wait)
                seen = int(desired["version"])
                if not desired.get("unchanged"):
                    instances, full_read_at = desired["instances"], time.monotonic()
                    networks = parse_networks(desired.get("networks"))
                self.reconciler.reconcile_all(instances, networks=networks)
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
    parser.add_argument(
        "--network-options",
        type=json.loads,
        default=None,
        help='JSON network settings, e.g. \'{"physical_networks": {"physnet1": "eth1"}, '
        '"local_ip": "192.0.2.10"}\' (docs/dataplane.md)',
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
            network_options=args.network_options,
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
