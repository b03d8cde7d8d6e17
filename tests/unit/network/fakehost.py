"""A pretend host for the network agent: answers the iproute2, bridge and nft commands the
agent runs from an in-memory model (links, namespaces, FDB, our nftables tables, processes
under a fake /proc), records every command, and fails loudly on one it does not know, so a
unit test sees exactly what a pass would do to a real host."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nubes.subp import SubpError, SubpResult

MUTATING = ("add", "del", "set", "append", "exec", "-f")


@dataclass
class FakeLink:
    name: str
    kind: str
    mtu: int = 1500
    master: str | None = None
    up: bool = False
    alias: str = ""
    mac: str = "02:00:00:00:00:01"
    info: dict[str, Any] = field(default_factory=dict)
    addresses: list[str] = field(default_factory=list)  # "a.b.c.d/len", global scope

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ifname": self.name,
            "mtu": self.mtu,
            "flags": ["BROADCAST", "MULTICAST", *(["UP"] if self.up else [])],
            "address": self.mac,
            "linkinfo": {"info_kind": self.kind, "info_data": dict(self.info)},
            "addr_info": [
                {"local": a.split("/")[0], "prefixlen": int(a.split("/")[1]), "scope": "global"}
                for a in self.addresses
            ],
        }
        if not self.kind:
            del data["linkinfo"]
        if self.master:
            data["master"] = self.master
        if self.alias:
            data["ifalias"] = self.alias
        return data


class FakeHost:
    def __init__(self, proc: Path) -> None:
        self.proc = proc
        self.links: dict[str, FakeLink] = {}
        self.netns: dict[str, dict[str, FakeLink]] = {}
        self.fdb: dict[str, set[str]] = {}
        self.tables: dict[str, str] = {}  # "bridge nubes" -> its text
        self.commands: list[tuple[str, ...]] = []
        self.signals: list[tuple[int, int]] = []
        self.next_pid = 4242
        self.fail: dict[str, str] = {}  # a command prefix -> stderr of its failure

    # -- what tests look at ---------------------------------------------------------------

    def changing_commands(self) -> list[tuple[str, ...]]:
        return [c for c in self.commands if any(word in c for word in MUTATING)]

    def add_process(self, argv: Sequence[str]) -> int:
        pid = self.next_pid
        self.next_pid += 1
        (self.proc / str(pid)).mkdir(parents=True)
        (self.proc / str(pid) / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
        return pid

    def kill(self, pid: int, sig: int) -> None:
        """Stands in for os.kill: never signals a real process."""
        self.signals.append((pid, sig))
        if sig in (signal.SIGTERM, signal.SIGKILL):
            for item in (self.proc / str(pid)).glob("*"):
                item.unlink()
            (self.proc / str(pid)).rmdir()

    # -- the command runner ------------------------------------------------------------

    def __call__(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        ok_codes: Sequence[int] = (0,),
    ) -> SubpResult:
        argv = tuple(args)
        self.commands.append(argv)
        for prefix, stderr in self.fail.items():
            if " ".join(argv).startswith(prefix):
                return self._result(argv, 2, "", stderr, check, ok_codes)
        try:
            code, out = self._dispatch(argv, input)
        except LookupError as exc:
            code, out = 1, f"ERR {exc}"
        if code:
            return self._result(argv, code, "", out, check, ok_codes)
        return self._result(argv, 0, out, "", check, ok_codes)

    def _result(
        self, argv: tuple[str, ...], code: int, out: str, err: str, check: bool, ok: Sequence[int]
    ) -> SubpResult:
        if check and code not in ok:
            raise SubpError(argv, code, out, err)
        return SubpResult(argv, code, out, err)

    def _dispatch(self, argv: tuple[str, ...], input: str | None) -> tuple[int, str]:
        if argv[0] == "nft":
            return self._nft(argv, input or "")
        if argv[0] == "bridge":
            return self._bridge(argv)
        if argv[0] == "modprobe":
            return 0, ""
        if argv[:3] == ("ip", "-json", "netns"):
            return 0, json.dumps([{"name": n} for n in self.netns])
        if argv[:2] == ("ip", "netns"):
            return self._netns(argv[2:])
        if argv[:2] == ("ip", "-n"):
            return self._in_netns(argv[2], argv[3:])
        if argv[:2] == ("ip", "tuntap"):
            name = argv[argv.index("dev") + 1]
            if argv[2] == "add":
                self._add(FakeLink(name, "tun", info={"type": "tap"}))
            else:
                del self.links[name]
            return 0, ""
        return self._ip(argv[1:])

    def _add(self, link: FakeLink, where: dict[str, FakeLink] | None = None) -> None:
        where = self.links if where is None else where
        if link.name in where:
            raise LookupError(f"{link.name} exists")
        where[link.name] = link

    def _ip(self, args: tuple[str, ...]) -> tuple[int, str]:
        if args[:4] == ("-json", "-details", "link", "show"):
            if "dev" in args:
                link = self.links.get(args[-1])
                return (0, json.dumps([link.as_json()])) if link else (1, "no such device")
            return 0, json.dumps([link.as_json() for link in self.links.values()])
        if args[:3] == ("-json", "address", "show"):
            return 0, json.dumps([self.links[args[-1]].as_json()])
        if args[:3] == ("-json", "route", "get"):
            return 0, json.dumps([{"dst": args[3], "prefsrc": "192.0.2.10"}])
        if args[:2] == ("link", "add"):
            return self._link_add(args[2:])
        if args[:2] == ("link", "set"):
            self._link_set(self.links[args[3]], args[4:])
            return 0, ""
        if args[:2] == ("link", "del"):
            link = self.links.pop(args[3])
            for ns in self.netns.values():  # a veth's peer goes with it
                ns.pop(link.info.get("peer", ""), None)
            return 0, ""
        raise AssertionError(f"the fake host does not know `ip {' '.join(args)}`")

    def _link_add(self, args: tuple[str, ...]) -> tuple[int, str]:
        words = list(args)
        kind = words[words.index("type") + 1]
        if "link" in words[:2]:
            parent = words[words.index("link") + 1]
            if parent not in self.links:
                return 1, "no parent"
        name = words[words.index("name") + 1]
        mtu = int(words[words.index("mtu") + 1])
        info: dict[str, Any] = {}
        if kind == "bridge":
            info = {"nf_call_iptables": 1, "nf_call_ip6tables": 1, "stp_state": 0}
        elif kind == "vxlan":
            info = {
                "id": int(words[words.index("id") + 1]),
                "local": words[words.index("local") + 1],
                "port": int(words[words.index("dstport") + 1]),
                "learning": "nolearning" not in words,
            }
        elif kind == "vlan":
            info = {"id": int(words[words.index("id") + 1])}
        elif kind == "veth":
            peer = words[words.index("peer") + 2]
            ns = words[words.index("netns") + 1]
            self._add(FakeLink(peer, "veth", mtu=mtu), self.netns[ns])
            info = {"peer": peer}
        self._add(FakeLink(name, kind, mtu=mtu, info=info))
        return 0, ""

    def _link_set(self, link: FakeLink, words: tuple[str, ...]) -> None:
        i = 0
        while i < len(words):
            word = words[i]
            if word == "up":
                link.up, i = True, i + 1
                continue
            value = words[i + 1]
            if word == "alias":
                link.alias = value
            elif word == "mtu":
                link.mtu = int(value)
            elif word == "master":
                link.master = value
            elif word == "address":
                link.mac = value
            elif word in ("type",):
                i += 1
                continue
            i += 2

    def _netns(self, args: tuple[str, ...]) -> tuple[int, str]:
        if args[0] == "add":
            self.netns[args[1]] = {"lo": FakeLink("lo", "")}
            return 0, ""
        if args[0] == "del":
            self.netns.pop(args[1], None)
            return 0, ""
        if args[0] == "pids":
            return 0, ""
        if args[0] == "exec" and args[2] == "dnsmasq":
            conf = Path(args[3].split("=", 1)[1])
            pid = self.add_process(["dnsmasq", args[3]])
            pidfile = re.search(r"^pid-file=(.*)$", conf.read_text(), re.MULTILINE)
            assert pidfile is not None
            Path(pidfile.group(1)).write_text(f"{pid}\n")
            return 0, ""
        raise AssertionError(f"the fake host does not know `ip netns {' '.join(args)}`")

    def _in_netns(self, ns: str, args: tuple[str, ...]) -> tuple[int, str]:
        links = self.netns[ns]
        if args[:3] == ("-json", "address", "show"):
            link = links.get(args[-1])
            return (0, json.dumps([link.as_json()])) if link else (1, "no such device")
        if args[:2] == ("link", "set"):
            self._link_set(links[args[3]], args[4:])
            return 0, ""
        if args[0] == "address":
            link = links[args[args.index("dev") + 1]]
            if args[1] == "add":
                link.addresses.append(args[2])
            else:
                link.addresses.remove(args[2])
            return 0, ""
        raise AssertionError(f"the fake host does not know `ip -n {ns} {' '.join(args)}`")

    def _bridge(self, argv: tuple[str, ...]) -> tuple[int, str]:
        if argv[1:4] == ("-json", "fdb", "show"):
            peers = self.fdb.get(argv[-1], set())
            return 0, json.dumps([{"mac": "00:00:00:00:00:00", "dst": p} for p in sorted(peers)])
        device, peer = argv[argv.index("dev") + 1], argv[argv.index("dst") + 1]
        if argv[2] == "append":
            self.fdb.setdefault(device, set()).add(peer)
        else:
            self.fdb[device].discard(peer)
        return 0, ""

    def _nft(self, argv: tuple[str, ...], script: str) -> tuple[int, str]:
        if argv[1:3] == ("-t", "list"):
            key = f"{argv[4]} {argv[5]}"
            return (0, self.tables[key]) if key in self.tables else (1, "No such file")
        assert argv[1:] == ("-f", "-"), argv
        # Our scripts reset both tables, then define them whole (or not at all).
        for match in re.finditer(r"^delete table (\w+) (\w+)$", script, re.MULTILINE):
            self.tables.pop(f"{match.group(1)} {match.group(2)}", None)
        for match in re.finditer(r"^table (\w+) (\w+) \{\n(.*?)^\}$", script, re.S | re.M):
            self.tables[f"{match.group(1)} {match.group(2)}"] = match.group(0)
        return 0, ""
