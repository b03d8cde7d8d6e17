"""Probes without a controller: the output parser, the runner (real child processes, killed by
their process group), the bundle format both sides share, and the built-in metrics."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nubes.agent import facts
from nubes.agent import probes as agent_probes
from nubes.agent.probes import (
    BundleError,
    InstalledProbes,
    ProbeRun,
    merge,
    outcome,
    parse_output,
    run_probe,
    unpack,
)
from nubes.domain.errors import InvalidInput
from nubes.hosts import probes as controller_probes
from nubes.hosts.probes import bundle_for, check_report, pack, scan

ENV = {"PATH": agent_probes.PATH}


def script(path: Path, body: str, *, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


@pytest.fixture
def pids(tmp_path: Path) -> Iterator[Path]:
    """A file the probes append their PIDs to; whatever of them survives a failing test is
    killed (only if still ours: its cwd is inside this test's directory)."""
    path = tmp_path / "pids"
    try:
        yield path
    finally:
        for pid in map(int, path.read_text().split() if path.exists() else []):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cwd").resolve().is_relative_to(tmp_path):
                    os.kill(pid, signal.SIGKILL)


def gone(pid: int, within: float = 5.0) -> bool:
    """Whether ``pid`` stopped existing (killed and reaped by init) within ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":  # killed, waiting for its new parent to reap it
            return True
        time.sleep(0.05)
    return False


# the parser ---------------------------------------------------------------------------------


def test_parser_keeps_good_lines_and_skips_comments_and_blanks():
    parsed = parse_output('# my probe\n\nMY_RVMS=3\n  LOAD_X = 0.25 \nQUOTED="7"\nBIG=1e3\n')
    assert parsed.metrics == {"MY_RVMS": 3, "LOAD_X": 0.25, "QUOTED": 7, "BIG": 1000.0}
    assert isinstance(parsed.metrics["MY_RVMS"], int)
    assert parsed.problems == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("my_rvms=3", "'my_rvms' is not a metric name"),
        ("1ABC=3", "'1ABC' is not a metric name"),
        ("A" * 65 + "=1", "is not a metric name"),
        ("FOO-BAR=1", "'FOO-BAR' is not a metric name"),
        ("FOO=abc", "'FOO=abc' is not a number"),
        ("FOO=", "'FOO=' is not a number"),
        ("FOO=1_000", "is not a number"),
        ("FOO=0x10", "is not a number"),
        ("FOO=inf", "'FOO=inf' is not a finite number"),
        ("FOO=-Infinity", "is not a finite number"),
        ("FOO=nan", "is not a finite number"),
        ("FOO=1e999", "is not a number"),
        ("just words", "'just words' is not NAME=VALUE"),
    ],
)
def test_parser_reports_bad_lines_with_their_number(line, problem):
    parsed = parse_output(f"GOOD=1\n{line}\n")
    assert parsed.metrics == {"GOOD": 1}
    assert len(parsed.problems) == 1
    assert parsed.problems[0].startswith("line 2: ")
    assert problem in parsed.problems[0]


def test_parser_keeps_the_first_of_a_repeated_name():
    parsed = parse_output("A=1\nA=2\n")
    assert parsed.metrics == {"A": 1}
    assert parsed.problems == ["line 2: A given twice; the first value is kept"]


def test_huge_output_is_capped_in_metrics_and_in_the_message():
    text = "\n".join(f"M{i}=1" for i in range(1000)) + "\n" + "bad\n" * 1000
    parsed = parse_output(text)
    assert len(parsed.metrics) == agent_probes.MAX_METRICS_PER_PROBE
    metrics, error = outcome(ProbeRun(0, text, "", None))
    assert len(metrics) == agent_probes.MAX_METRICS_PER_PROBE
    assert error is not None
    assert len(error) <= agent_probes.MAX_ERROR
    assert error.endswith(f"({len(parsed.problems)} problems)")


def test_a_probe_that_prints_nothing_is_an_error():
    assert outcome(ProbeRun(0, "# nothing\n\n", "", None)) == ({}, "printed no metrics")


# the runner ---------------------------------------------------------------------------------


def test_run_gives_stdout_in_the_probes_directory(tmp_path):
    probe = script(tmp_path / "ok.sh", 'test "$PWD" = "$(dirname "$0")" && echo CWD_OK=1\n')
    run = run_probe(probe, timeout=5, env=ENV)
    assert run == ProbeRun(0, "CWD_OK=1\n", "", None)


def test_a_hanging_probe_is_killed_with_its_process_group(tmp_path, pids):
    body = f"echo $$ >> {pids}\nsleep 300 &\necho $! >> {pids}\necho A=1\nsleep 300\n"
    probe = script(tmp_path / "hang.sh", body)
    started = time.monotonic()
    run = run_probe(probe, timeout=0.5, env=ENV)
    assert time.monotonic() - started < 3
    assert run.failure == "timed out after 0.5 s"
    assert outcome(run) == ({}, "timed out after 0.5 s")  # its partial output is dropped
    assert all(gone(int(pid)) for pid in pids.read_text().split())


def test_what_a_finished_probe_leaves_in_its_group_is_killed(tmp_path, pids):
    body = f"sleep 300 >/dev/null 2>&1 &\necho $! >> {pids}\necho A=1\n"
    run = run_probe(script(tmp_path / "leaves.sh", body), timeout=5, env=ENV)
    assert outcome(run) == ({"A": 1}, None)
    assert gone(int(pids.read_text()))


def test_a_probe_that_exits_non_zero_or_crashes_gives_no_metrics(tmp_path):
    failing = script(tmp_path / "fail.sh", "echo A=1\necho first >&2\necho boom >&2\nexit 3\n")
    assert outcome(run_probe(failing, timeout=5, env=ENV)) == ({}, "exited 3: first | boom")
    crashing = script(tmp_path / "crash.sh", "echo A=1\nkill -SEGV $$\n")
    assert outcome(run_probe(crashing, timeout=5, env=ENV)) == ({}, "killed by SIGSEGV")


def test_garbage_output_keeps_the_good_lines(tmp_path):
    probe = script(tmp_path / "garbage.sh", "printf 'A=1\\n\\377\\376 junk\\nB=oops\\n'\n")
    metrics, error = outcome(run_probe(probe, timeout=5, env=ENV))
    assert metrics == {"A": 1}
    assert error is not None
    assert "line 2:" in error
    assert "line 3: 'B=oops' is not a number" in error


def test_endless_output_is_cut_and_the_probe_killed(tmp_path):
    probe = script(tmp_path / "yes.sh", "exec yes A=1\n")
    started = time.monotonic()
    run = run_probe(probe, timeout=5, env=ENV)
    assert time.monotonic() - started < 3
    assert run.failure == f"printed more than {agent_probes.MAX_OUTPUT} bytes; killed"
    assert len(run.stdout) <= agent_probes.MAX_OUTPUT


def test_a_file_that_cannot_be_executed_is_reported(tmp_path):
    probe = tmp_path / "noshebang"
    probe.write_text("echo A=1\n")
    probe.chmod(0o755)
    assert run_probe(probe, timeout=5, env=ENV).failure == "cannot run: Exec format error"


def test_probes_run_in_parallel_with_a_minimal_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_FROM_AGENT", "x")
    for i in range(4):
        script(tmp_path / "probes" / "common" / f"p{i}", f"sleep 1\necho P{i}=$#\n")
    env_probe = 'echo ENV_VARS=$(env | grep -vc "^PWD=\\|^SHLVL=\\|^_=")\n'
    script(
        tmp_path / "probes" / "fake" / "env", env_probe + "echo SECRET=${SECRET_FROM_AGENT:-0}\n"
    )
    installed = InstalledProbes(tmp_path, "fake", env={"NUBES_HYPERVISOR": "fake"})
    started = time.monotonic()
    metrics, errors = installed.run()
    assert time.monotonic() - started < 2.5  # 4 x 1 s, at once
    assert errors == {}
    assert metrics == {"P0": 0, "P1": 0, "P2": 0, "P3": 0, "ENV_VARS": 4, "SECRET": 0}


def test_only_common_and_own_kind_run(tmp_path):
    script(tmp_path / "probes" / "common" / "c", "echo C=1\n")
    script(tmp_path / "probes" / "qemu" / "q", "echo Q=1\n")
    script(tmp_path / "probes" / "fake" / "plain", "echo NOPE=1\n", mode=0o644)
    assert list(InstalledProbes(tmp_path, "fake").probes()) == ["common/c"]
    assert list(InstalledProbes(tmp_path, "qemu").probes()) == ["common/c", "qemu/q"]


def test_probes_may_not_override_built_ins_or_each_other():
    runs = {
        "common/a": ProbeRun(0, "FREE_MEMORY=1\nMINE=1\n", "", None),
        "fake/b": ProbeRun(0, "MINE=2\nOTHER=3\n", "", None),
    }
    metrics, errors = merge(runs, {"FREE_MEMORY"}, {})
    assert metrics == {"MINE": 1, "OTHER": 3}
    assert errors == {
        "common/a": "FREE_MEMORY is a built-in metric; ignored",
        "fake/b": "MINE is also given by common/a; ignored",
    }


# the bundle ---------------------------------------------------------------------------------


def test_shared_rules_are_the_same_on_both_sides():
    """Both sides take them from nubes.domain.probes (the agent may share nothing else)."""
    from nubes.domain import probes as shared

    for name in (
        "METRIC_NAME",
        "PROBE_NAME",
        "COMMON",
        "KINDS",
        "MAX_PROBES",
        "MAX_PROBE_BYTES",
        "MAX_BUNDLE_BYTES",
    ):
        for side in (agent_probes, controller_probes):  # used there: the shared one, not a copy
            assert getattr(side, name, getattr(shared, name)) is getattr(shared, name), name
    assert controller_probes.STRING_METRICS is shared.STRING_METRICS


def test_pack_is_deterministic_and_unpack_round_trips(tmp_path):
    root = tmp_path / "probes"
    script(root / "fake" / "b.sh", "echo B=1\n")
    script(root / "common" / "a.sh", "echo A=1\n")
    script(root / "qemu" / "q.sh", "echo Q=1\n")
    first = pack(scan(root))
    os.utime(root / "common" / "a.sh", (1, 1))
    (root / "fake" / "b.sh").chmod(0o700)
    assert pack(scan(root)) == first  # mtimes and modes do not change the version
    files = unpack(bundle_for(scan(root), "fake"), "fake")
    assert files == {"common/a.sh": b"#!/bin/sh\necho A=1\n", "fake/b.sh": b"#!/bin/sh\necho B=1\n"}


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, content in members:
            info.size = len(content) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(content) if info.isreg() else None)
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o755
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("../evil"),
        _member("/etc/cron.d/evil"),
        _member("common/../../evil"),
        _member("common/.hidden"),
        _member("common/sub/deeper"),
        _member("qemu/other-kind"),
        _member("common/link", tarfile.SYMTYPE, "/etc/shadow"),
        _member("common/hard", tarfile.LNKTYPE, "/etc/shadow"),
        _member("common/dir", tarfile.DIRTYPE),
        _member("common/fifo", tarfile.FIFOTYPE),
    ],
    ids=lambda m: m.name,
)
def test_unpack_refuses_anything_but_plain_probe_files(member):
    bundle = _tar((_member("common/fine"), b"#!/bin/sh\n"), (member, b"#!/bin/sh\n"))
    with pytest.raises(BundleError):
        unpack(bundle, "fake")


def test_unpack_refuses_what_is_not_a_tar():
    with pytest.raises(BundleError, match="not a tar"):
        unpack(b"<html>oops</html>" * 100, "fake")


def test_install_replaces_the_whole_set_and_survives_a_restart(tmp_path):
    installed = InstalledProbes(tmp_path, "fake")
    assert installed.version == ""
    installed.install("v1", pack({"common/a": b"#!/bin/sh\necho A=1\n"}))
    installed.install("v2", pack({"fake/b": b"#!/bin/sh\necho B=1\n"}))
    assert list(installed.probes()) == ["fake/b"]
    assert installed.run() == ({"B": 1}, {})
    assert InstalledProbes(tmp_path, "fake").version == "v2"
    assert InstalledProbes(tmp_path, "qemu").version == ""  # installed for another kind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probes"]  # nothing left behind


def test_a_refused_bundle_leaves_the_installed_probes_alone(tmp_path):
    installed = InstalledProbes(tmp_path, "fake")
    installed.install("v1", pack({"common/a": b"#!/bin/sh\necho A=1\n"}))

    class Source:
        def download_probes(self) -> tuple[str, bytes]:
            return "v2", _tar((_member("../escape"), b"x"))

    assert installed.update(Source(), "v2") is False
    assert installed.version == "v1"
    assert not (tmp_path.parent / "escape").exists()
    metrics, errors = installed.run()
    assert metrics == {"A": 1}
    assert errors["bundle"].startswith("cannot install probes v2: '../escape'")


# the controller's checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: script(r / "fake" / "x.sh", "echo\n", mode=0o644), "fake/x.sh: not executable"),
        (lambda r: script(r / "fake" / "bad name", "echo\n"), "'fake/bad name'"),
        (lambda r: script(r / "fake" / ".hidden", "echo\n"), "'fake/.hidden'"),
        (lambda r: script(r / "kvm" / "x", "echo\n"), "kvm: probes go in a directory named"),
        (lambda r: script(r / "loose", "echo\n"), "loose: probes go in a directory named"),
        (lambda r: (r / "fake" / "sub").mkdir(parents=True), "fake/sub: not a regular file"),
        (
            lambda r: (
                (r / "fake").mkdir(parents=True) or (r / "fake" / "l").symlink_to("/bin/true")
            ),
            "fake/l: not a regular file",
        ),
        (
            lambda r: script(r / "fake" / "x", "").write_text("echo A=1\n"),
            "fake/x: neither a script",
        ),
    ],
)
def test_scan_refuses_unsafe_probe_dirs(tmp_path, make, message):
    root = tmp_path / "probes"
    root.mkdir()
    make(root)
    with pytest.raises(InvalidInput, match="probes not synced") as caught:
        scan(root)
    assert message in str(caught.value)
    assert caught.value.error_code == "nubes.probe.invalid"


def test_scan_of_a_missing_dir_is_no_probes(tmp_path):
    assert scan(tmp_path / "nothing") == {}


@pytest.mark.parametrize(
    ("metrics", "field"),
    [
        ({"FREE": float("nan")}, "metrics.FREE: must be a finite number"),
        ({"FREE": float("inf")}, "metrics.FREE: must be a finite number"),
        ({"FREE": True}, "metrics.FREE: must be a number"),
        ({"FREE": "12"}, "metrics.FREE: must be a number"),
        ({"free": 1}, "metrics.free: a metric name"),
        ({"ARCH": 3}, "metrics.ARCH: a short printable string"),
    ],
)
def test_heartbeat_reports_are_checked(metrics, field):
    with pytest.raises(InvalidInput, match=field):
        check_report(metrics, {})


def test_a_good_report_passes():
    check_report({"HYPERVISOR": "fake", "ARCH": "x86_64", "MY_RVMS": 2, "USED_CPU": 3.5}, {})


# built-in metrics -----------------------------------------------------------------------------


def test_cpu_is_measured_between_two_reads(tmp_path):
    stat = tmp_path / "stat"
    sampler = facts.CpuSampler(stat)
    stat.write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n")
    assert sampler.busy_fraction() == pytest.approx(0.2)  # since boot: 200 busy of 1000
    stat.write_text("cpu  110 0 100 700 100 0 0 0 0 0\n")
    assert sampler.busy_fraction() == pytest.approx(0.2)  # 10 ticks: too short to tell
    stat.write_text("cpu  400 0 100 800 100 0 0 0 0 0\n")
    assert sampler.busy_fraction() == pytest.approx(0.75)  # 300 busy of 400 since


def test_builtin_metrics_follow_the_conventions(tmp_path):
    monitor = facts.Monitor(
        facts.HostKind("fake", False, "x86_64"),
        {"default": tmp_path, "scratch disk": tmp_path},
        InstalledProbes(tmp_path, "fake"),
    )
    metrics, errors = monitor.collect(running=2)
    assert errors == {}
    assert metrics["FREE_CPU"] == pytest.approx(100 * metrics["CPU_COUNT"] - metrics["USED_CPU"])
    assert metrics["USED_MEMORY"] == metrics["TOTAL_MEMORY"] - metrics["FREE_MEMORY"]
    assert metrics["DS_DEFAULT_TOTAL_MB"] > 0
    assert metrics["DS_SCRATCH_DISK_FREE_MB"] == metrics["DS_DEFAULT_FREE_MB"]
    assert (metrics["RUNNING_VMS"], metrics["KVM"], metrics["HYPERVISOR"]) == (2, 0, "fake")
    check_report(metrics, errors)  # what the agent sends, the controller takes
