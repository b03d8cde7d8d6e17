"""The fake hypervisor: every semantic its docstring defines (they are the contract real drivers
follow), failure injection, persistence across driver objects, and its cheapness at scale."""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nubes.agent.hypervisors.base import (
    HypervisorError,
    ImageKind,
    InstanceSpec,
    PowerState,
    get,
    registered,
)
from nubes.agent.hypervisors.fake import STATE_DIR, FakeHypervisor

ABSENT, STOPPED, RUNNING, PAUSED, CRASHED = (
    PowerState.absent,
    PowerState.stopped,
    PowerState.running,
    PowerState.paused,
    PowerState.crashed,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_spec(instance_id: str = "i-1", **changes: Any) -> InstanceSpec:
    values: dict[str, Any] = {
        "id": instance_id,
        "name": instance_id,
        "hostname": f"host-{instance_id}",
        "vcpus": 1,
        "ram_mb": 128,
        "disk_gb": 1,
        "image_id": "tiny",
        "image_path": Path("/images/tiny.qcow2"),
        "image_kind": ImageKind.disk,
    }
    values.update(changes)
    return InstanceSpec(**values)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(tmp_path: Path, clock: Clock) -> FakeHypervisor:
    return FakeHypervisor(tmp_path / "fake", clock=clock)


def bring_to(
    fake: FakeHypervisor, clock: Clock, state: PowerState, instance_id: str = "i-1"
) -> None:
    spec = make_spec(instance_id)
    if state is ABSENT:
        return
    fake.create(spec)
    if state is STOPPED:
        return
    if state is CRASHED:
        fake.inject(instance_id, crash_after=5)
    fake.start(spec)
    if state is PAUSED:
        fake.pause(instance_id)
    if state is CRASHED:
        clock.now += 5
        assert fake.status(instance_id).power is CRASHED
        fake.inject(instance_id, crash_after=1e9)  # later starts do not crash again
    assert fake.status(instance_id).power is state


def test_registered_probes_and_reports_capacity(tmp_path: Path) -> None:
    assert registered()["fake"] is FakeHypervisor
    assert get("fake") is FakeHypervisor
    assert FakeHypervisor.probe() is None
    caps = FakeHypervisor(tmp_path, capacity={"vcpus": 8}).capabilities()
    assert caps.kind == "fake"
    assert caps.image_kinds == frozenset(ImageKind)
    assert caps.pause
    assert not caps.accelerated
    assert caps.details["capacity"] == {"vcpus": 8, "ram_mb": 262144, "disk_gb": 4096}


OPERATIONS: dict[str, Callable[[FakeHypervisor], None]] = {
    "create": lambda f: f.create(make_spec()),
    "start": lambda f: f.start(make_spec()),
    "stop": lambda f: f.stop("i-1", timeout=1),
    "reboot hard": lambda f: f.reboot("i-1", hard=True),
    "reboot soft": lambda f: f.reboot("i-1"),
    "pause": lambda f: f.pause("i-1"),
    "resume": lambda f: f.resume("i-1"),
    "destroy": lambda f: f.destroy("i-1"),
}
ERROR = "error"
# The table in fake.py's docstring, row by row: the state after the operation, or an error.
TABLE: dict[str, dict[PowerState, PowerState | str]] = {
    "create": {ABSENT: STOPPED, STOPPED: STOPPED, RUNNING: RUNNING, PAUSED: PAUSED,
               CRASHED: CRASHED},
    "start": {ABSENT: ERROR, STOPPED: RUNNING, RUNNING: RUNNING, PAUSED: RUNNING,
              CRASHED: RUNNING},
    "stop": {ABSENT: ERROR, STOPPED: STOPPED, RUNNING: STOPPED, PAUSED: STOPPED,
             CRASHED: STOPPED},
    "reboot hard": {ABSENT: ERROR, STOPPED: RUNNING, RUNNING: RUNNING, PAUSED: RUNNING,
                    CRASHED: RUNNING},
    "reboot soft": {ABSENT: ERROR, STOPPED: ERROR, RUNNING: RUNNING, PAUSED: ERROR,
                    CRASHED: ERROR},
    "pause": {ABSENT: ERROR, STOPPED: ERROR, RUNNING: PAUSED, PAUSED: PAUSED, CRASHED: ERROR},
    "resume": {ABSENT: ERROR, STOPPED: ERROR, RUNNING: RUNNING, PAUSED: RUNNING,
               CRASHED: ERROR},
    "destroy": {ABSENT: ABSENT, STOPPED: ABSENT, RUNNING: ABSENT, PAUSED: ABSENT,
                CRASHED: ABSENT},
}  # fmt: skip
CASES = [(op, state, TABLE[op][state]) for op in TABLE for state in TABLE[op]]


@pytest.mark.parametrize(
    ("operation", "before", "after"), CASES, ids=[f"{op}-{s}" for op, s, _ in CASES]
)
def test_transition_table(
    fake: FakeHypervisor, clock: Clock, operation: str, before: PowerState, after: Any
) -> None:
    bring_to(fake, clock, before)
    if after == ERROR:
        with pytest.raises(HypervisorError) as caught:
            OPERATIONS[operation](fake)
        assert caught.value.retryable is False
        assert fake.status("i-1").power is before  # a refused operation changes nothing
    else:
        OPERATIONS[operation](fake)
        assert fake.status("i-1").power is after


def test_status_of_an_absent_instance_is_absent_not_an_error(fake: FakeHypervisor) -> None:
    assert fake.status("nope").power is ABSENT
    assert fake.list_instances() == []


def test_create_of_an_existing_instance_keeps_its_spec(fake: FakeHypervisor) -> None:
    fake.create(make_spec(vcpus=1))
    fake.create(make_spec(vcpus=4))
    fake.start(make_spec(vcpus=2))
    fake.stop("i-1")
    state = FakeHypervisor(fake.state_dir)._instances["i-1"]
    assert state.spec["vcpus"] == 2  # start keeps the spec it was given, create did not


def test_start_of_a_running_instance_does_not_boot_it_again(fake: FakeHypervisor) -> None:
    fake.create(make_spec())
    fake.start(make_spec())
    fake.start(make_spec())
    assert fake.console_log("i-1").count("booted") == 1


def test_resume_by_start_is_not_a_boot(fake: FakeHypervisor) -> None:
    fake.create(make_spec())
    fake.start(make_spec())
    fake.pause("i-1")
    fake.start(make_spec())
    assert fake.status("i-1").power is RUNNING
    assert fake.console_log("i-1").count("booted") == 1


def test_graceful_stop_is_immediate_when_the_guest_cooperates(fake: FakeHypervisor) -> None:
    fake.create(make_spec())
    fake.start(make_spec())
    started = time.monotonic()
    fake.stop("i-1", timeout=5)
    assert time.monotonic() - started < 1
    assert fake.status("i-1").detail == "powered off by the guest"


def test_stop_waits_out_a_guest_that_ignores_it_then_stops_hard(fake: FakeHypervisor) -> None:
    fake.create(make_spec())
    fake.start(make_spec())
    fake.inject("i-1", ignore_shutdown=True)
    started = time.monotonic()
    fake.stop("i-1", timeout=0.2)
    assert time.monotonic() - started >= 0.2
    seen = fake.status("i-1")
    assert seen.power is STOPPED
    assert "ignored" in seen.detail


def test_stop_with_zero_timeout_is_hard_at_once(fake: FakeHypervisor) -> None:
    fake.create(make_spec())
    fake.start(make_spec())
    fake.inject("i-1", ignore_shutdown=True)
    started = time.monotonic()
    fake.stop("i-1", timeout=0)
    assert time.monotonic() - started < 0.1
    with pytest.raises(HypervisorError):
        fake.stop("i-1", timeout=-1)


def test_soft_reboot_of_a_deaf_guest_falls_back_to_a_reset(tmp_path: Path) -> None:
    fake = FakeHypervisor(tmp_path, ignore_shutdown=True, soft_reboot_timeout=0.1)
    fake.create(make_spec())
    fake.start(make_spec())
    fake.reboot("i-1")
    seen = fake.status("i-1")
    assert seen.power is RUNNING
    assert "reset" in seen.detail
    assert fake.console_log("i-1").count("booted") == 2


def test_crash_after_is_computed_lazily_and_sticks(fake: FakeHypervisor, clock: Clock) -> None:
    threads = threading.active_count()
    fake.inject("i-1", crash_after=10)
    fake.create(make_spec())
    fake.start(make_spec())
    assert threading.active_count() == threads  # no timer thread per instance
    clock.now += 9.9
    assert fake.status("i-1").power is RUNNING
    clock.now += 0.1
    seen = fake.status("i-1")
    assert seen.power is CRASHED
    assert "without being asked" in seen.detail
    clock.now += 100
    assert fake.status("i-1").power is CRASHED  # until someone acts
    fake.start(make_spec())
    assert fake.status("i-1").power is RUNNING  # and each start re-arms it
    clock.now += 10
    assert fake.status("i-1").power is CRASHED


def test_crash_after_injected_into_a_running_instance_counts_from_its_start(
    fake: FakeHypervisor, clock: Clock
) -> None:
    fake.create(make_spec())
    fake.start(make_spec())
    clock.now += 30
    fake.inject("i-1", crash_after=10)
    assert fake.status("i-1").power is CRASHED


def test_host_wide_crash_after(tmp_path: Path, clock: Clock) -> None:
    fake = FakeHypervisor(tmp_path, crash_after=1, clock=clock)
    for name in ("a", "b"):
        fake.create(make_spec(name))
        fake.start(make_spec(name))
    clock.now += 1
    assert {fake.status(n).power for n in ("a", "b")} == {CRASHED}


def test_a_paused_guest_does_not_crash(fake: FakeHypervisor, clock: Clock) -> None:
    fake.inject("i-1", crash_after=1)
    fake.create(make_spec())
    fake.start(make_spec())
    fake.pause("i-1")
    clock.now += 5
    assert fake.status("i-1").power is PAUSED


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_fail_at_raises_a_retryable_error_and_changes_nothing(
    tmp_path: Path, operation: str
) -> None:
    name = operation.split()[0]
    fake = FakeHypervisor(tmp_path)
    fake.create(make_spec())
    fake.start(make_spec())
    fake.inject("i-1", fail_at={name})
    with pytest.raises(HypervisorError) as caught:
        OPERATIONS[operation](fake)
    assert caught.value.retryable is True
    assert fake.status("i-1").power is RUNNING
    fake.inject("i-1", fail_at=())
    OPERATIONS[operation](fake)


def test_fail_at_for_the_whole_host_and_for_unmade_instances(tmp_path: Path) -> None:
    fake = FakeHypervisor(tmp_path, fail_at={"status", "list_instances"})
    with pytest.raises(HypervisorError):
        fake.status("x")
    with pytest.raises(HypervisorError):
        fake.list_instances()
    fake.clear_faults()
    assert fake.list_instances() == []
    fake.inject("later", fail_at={"create"})
    with pytest.raises(HypervisorError):
        fake.create(make_spec("later"))
    assert fake.status("later").power is ABSENT
    fake.clear_faults("later")
    fake.create(make_spec("later"))


def test_unknown_operation_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        FakeHypervisor(tmp_path, fail_at={"boot"})
    with pytest.raises(ValueError, match="unknown"):
        FakeHypervisor(tmp_path).inject("x", hang_at={"explode"})
    with pytest.raises(ValueError, match="unknown"):
        FakeHypervisor(tmp_path, delays={"strat": 1.0})


def test_hang_at_blocks_until_released_without_blocking_other_instances(
    fake: FakeHypervisor,
) -> None:
    fake.create(make_spec("stuck"))
    fake.create(make_spec("free"))
    fake.inject("stuck", hang_at={"start"})
    worker = threading.Thread(target=fake.start, args=(make_spec("stuck"),))
    worker.start()
    time.sleep(0.1)
    assert worker.is_alive()
    fake.start(make_spec("free"))  # the hang holds no lock
    assert fake.status("free").power is RUNNING
    assert fake.status("stuck").power is STOPPED
    fake.release_hangs()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert fake.status("stuck").power is RUNNING


def test_hang_at_times_out_with_a_retryable_error(tmp_path: Path) -> None:
    fake = FakeHypervisor(tmp_path, hang_at={"destroy"}, hang_timeout=0.05)
    fake.create(make_spec())
    with pytest.raises(HypervisorError, match="hung") as caught:
        fake.destroy("i-1")
    assert caught.value.retryable
    assert fake.status("i-1").power is STOPPED


def test_delays_overlap_across_instances(tmp_path: Path) -> None:
    fake = FakeHypervisor(tmp_path, delays={"start": 0.2})
    specs = [make_spec(f"i-{n}") for n in range(5)]
    for spec in specs:
        fake.create(spec)
    started = time.monotonic()
    workers = [threading.Thread(target=fake.start, args=(spec,)) for spec in specs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.8  # in parallel, not 5 x 0.2 s
    assert {fake.status(s.id).power for s in specs} == {RUNNING}


def test_concurrent_operations_on_one_host_lose_nothing(tmp_path: Path) -> None:
    fake = FakeHypervisor(tmp_path)

    def make(first: int) -> None:
        for n in range(first, first + 50):
            fake.create(make_spec(f"i-{n:03}"))
            fake.start(make_spec(f"i-{n:03}"))

    workers = [threading.Thread(target=make, args=(k * 50,)) for k in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert fake.list_instances() == [f"i-{n:03}" for n in range(200)]
    assert FakeHypervisor(tmp_path).list_instances() == fake.list_instances()


def test_a_new_driver_on_the_same_state_dir_adopts_everything(
    fake: FakeHypervisor, clock: Clock
) -> None:
    bring_to(fake, clock, RUNNING, "run")
    bring_to(fake, clock, PAUSED, "pause")
    bring_to(fake, clock, STOPPED, "stop")
    fake.inject("doomed", crash_after=10)
    bring_to(fake, clock, RUNNING, "doomed")

    adopted = FakeHypervisor(fake.state_dir, clock=clock)  # the agent restarted
    assert adopted.list_instances() == ["doomed", "pause", "run", "stop"]
    assert [adopted.status(i).power for i in ("run", "pause", "stop", "doomed")] == [
        RUNNING, PAUSED, STOPPED, RUNNING,
    ]  # fmt: skip
    clock.now += 10
    assert adopted.status("doomed").power is CRASHED  # the pending crash survived the restart
    assert "booted" in adopted.console_log("run")
    adopted.destroy("run")
    assert FakeHypervisor(fake.state_dir).list_instances() == ["doomed", "pause", "stop"]


def test_without_persistence_nothing_is_written(tmp_path: Path) -> None:
    fake = FakeHypervisor(tmp_path / "volatile", persist=False)
    fake.create(make_spec())
    assert not (tmp_path / "volatile").exists()
    assert FakeHypervisor(tmp_path / "volatile").list_instances() == []


def test_an_unreadable_state_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / STATE_DIR).mkdir()
    (tmp_path / STATE_DIR / "i-1.json").write_text("{not json")
    with pytest.raises(HypervisorError, match="unreadable"):
        FakeHypervisor(tmp_path)


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden", "../up"])
def test_ids_that_are_no_file_names_are_refused(fake: FakeHypervisor, bad: str) -> None:
    with pytest.raises(HypervisorError) as caught:
        fake.create(make_spec(bad))
    assert not caught.value.retryable


def test_console_log_tails_bytes(fake: FakeHypervisor) -> None:
    with pytest.raises(HypervisorError) as caught:
        fake.console_log("i-1")
    assert not caught.value.retryable
    fake.create(make_spec())
    assert fake.console_log("i-1") == ""
    fake.start(make_spec())
    fake.reboot("i-1", hard=True)
    fake.stop("i-1")
    text = fake.console_log("i-1")
    assert text.splitlines() == [
        "fake: host-i-1: booted (boot 1)",
        "fake: host-i-1: booted (boot 2)",
        "fake: host-i-1: powered off by the guest",
    ]
    assert fake.console_log("i-1", tail_bytes=10) == text[-10:]
    assert fake.console_log("i-1", tail_bytes=0) == ""


def test_a_thousand_hosts_fit_in_one_process(tmp_path: Path) -> None:
    threads = threading.active_count()
    tracemalloc.start()
    started = time.monotonic()
    try:
        hosts = [FakeHypervisor(tmp_path / f"host-{n}", persist=False) for n in range(1000)]
        for n, host in enumerate(hosts):
            for k in range(3):
                spec = make_spec(f"i-{n}-{k}")
                host.create(spec)
                host.start(spec)
        assert sum(len(host.list_instances()) for host in hosts) == 3000
        assert all(host.status(f"i-{n}-0").power is RUNNING for n, host in enumerate(hosts))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 10
    assert peak < 64 * 1024 * 1024, f"{peak / 1e6:.1f} MB for 1,000 fake hosts"
    assert threading.active_count() == threads


def test_a_thousand_persisting_hosts_are_cheap_too(tmp_path: Path) -> None:
    started = time.monotonic()
    hosts = [FakeHypervisor(tmp_path / f"host-{n}") for n in range(1000)]
    assert not any(tmp_path.iterdir())  # nothing is written until something happens
    for n, host in enumerate(hosts):
        host.create(make_spec(f"i-{n}"))
        host.start(make_spec(f"i-{n}"))
    assert time.monotonic() - started < 20
    assert FakeHypervisor(tmp_path / "host-999").status("i-999").power is RUNNING
