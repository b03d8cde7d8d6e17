"""Test hosts as network namespaces: a controller host and N compute hosts on one bridge that
lives inside the controller's namespace, with addresses in a test-only range. Every namespace,
link and process made here is removed in ``close()``, even after a failure."""

from __future__ import annotations

import os
import secrets
import shutil

from nubes.subp import SubpError, subp


def missing_feature() -> str | None:
    """Why namespaced test hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"nbp{secrets.token_hex(3)}"
    try:
        subp(["ip", "netns", "add", probe])
    except SubpError as exc:
        return f"the kernel refuses network namespaces: {exc}"
    subp(["ip", "netns", "del", probe], check=False)
    return None


class TestHosts:
    """``ctl`` at 10.251.X.1, compute hosts at .2, .3, …; ``prefix`` keeps names unique."""

    __test__ = False  # not a pytest class

    def __init__(self, count: int) -> None:
        self.prefix = f"nt{secrets.token_hex(2)}"
        self.subnet = f"10.251.{secrets.randbelow(200) + 20}"
        self.ctl = f"{self.prefix}-ctl"
        self.hosts = [f"{self.prefix}-h{i + 1}" for i in range(count)]
        self.made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def address(self, ns: str) -> str:
        index = 1 if ns == self.ctl else self.hosts.index(ns) + 2
        return f"{self.subnet}.{index}"

    def _ip(self, ns: str, *args: str) -> None:
        subp(["ip", "-n", ns, *args])

    def _build(self) -> None:
        for ns in (self.ctl, *self.hosts):
            subp(["ip", "netns", "add", ns])
            self.made.append(ns)
            self._ip(ns, "link", "set", "lo", "up")
        self._ip(self.ctl, "link", "add", "br0", "type", "bridge")
        self._ip(self.ctl, "link", "set", "br0", "up")
        self._ip(self.ctl, "addr", "add", f"{self.address(self.ctl)}/24", "dev", "br0")
        for i, ns in enumerate(self.hosts):
            outer, inner = f"{self.prefix}o{i}", f"{self.prefix}i{i}"
            subp(
                [
                    "ip",
                    "link",
                    "add",
                    outer,
                    "netns",
                    self.ctl,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    inner,
                    "netns",
                    ns,
                ]
            )
            self._ip(self.ctl, "link", "set", outer, "master", "br0", "up")
            self._ip(ns, "link", "set", inner, "up")
            self._ip(ns, "addr", "add", f"{self.address(ns)}/24", "dev", inner)

    def exec_argv(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def close(self) -> None:
        # Deleting a namespace removes its links (veth peers and the bridge go with it).
        for ns in reversed(self.made):
            subp(["ip", "netns", "del", ns], check=False)
        self.made.clear()
