"""Whether KVM can really run guests here, probed once per process.

A ``/dev/kvm`` node is not enough: in some sandboxes and nested setups it opens, creates VMs and
vCPUs, and even runs code, but emulates every instruction, so a Linux guest takes minutes to
decompress its kernel where TCG boots it in seconds. So the probe runs a tiny real-mode guest
through the KVM ioctls (no QEMU, no subprocess: a few milliseconds) that counts a loop down and
halts, and times it. Hardware virtualisation runs the loop at about a nanosecond an iteration
and TCG at a few; anything slower than :data:`MAX_NS_PER_ITERATION` is refused.

This module only reads and probes; it never changes the host.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import mmap
import os
import struct
import time
from dataclasses import dataclass

DEVICE = "/dev/kvm"
KVM_API_VERSION = 12
LOOP_ITERATIONS = 20_000
MAX_NS_PER_ITERATION = 100.0  # 50-100 x slower than hardware: an emulated /dev/kvm
ATTEMPTS = 3  # the best of a few runs: a descheduled probe thread is not a slow KVM

_KVMIO = 0xAE
_KVM_EXIT_HLT = 5
_KVM_EXIT_INTR = 10
_SREGS_SIZE = 312  # struct kvm_sregs on x86-64
_REGS_SIZE = 144  # struct kvm_regs on x86-64
_REGION_SIZE = 32  # struct kvm_userspace_memory_region
_GUEST_MEMORY = 0x1000


def _io(nr: int) -> int:
    return (_KVMIO << 8) | nr


def _iow(nr: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (_KVMIO << 8) | nr


def _ior(nr: int, size: int) -> int:
    return (2 << 30) | (size << 16) | (_KVMIO << 8) | nr


KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, _REGION_SIZE)
KVM_RUN = _io(0x80)
KVM_SET_REGS = _iow(0x82, _REGS_SIZE)
KVM_GET_SREGS = _ior(0x83, _SREGS_SIZE)
KVM_SET_SREGS = _iow(0x84, _SREGS_SIZE)

# Real mode at address 0: mov ecx, N; loop: dec ecx; jnz loop; hlt.
_PROGRAM = b"\x66\xb9" + struct.pack("<I", LOOP_ITERATIONS) + b"\x66\x49" + b"\x75\xfc" + b"\xf4"


@dataclass(frozen=True)
class KvmProbe:
    usable: bool
    why: str  # in words, for capabilities.details and the operator
    ns_per_iteration: float | None = None


class _Refused(Exception):
    pass


@functools.cache
def probe_kvm(device: str = DEVICE) -> KvmProbe:
    """Whether KVM runs guests at hardware speed here (cached for the process)."""
    if not os.path.exists(device):
        return KvmProbe(False, f"no {device} (no KVM module, or not passed to this container)")
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return KvmProbe(False, f"cannot open {device}: {exc.strerror}")
    try:
        best = min(_timed_run(fd) for _ in range(ATTEMPTS))
    except _Refused as exc:
        return KvmProbe(False, str(exc))
    finally:
        os.close(fd)
    ns = round(best * 1e9 / LOOP_ITERATIONS, 1)
    if ns > MAX_NS_PER_ITERATION:
        return KvmProbe(
            False,
            f"{device} runs guest code at {ns} ns per loop iteration (hardware does about 1, "
            f"TCG a few; the limit is {MAX_NS_PER_ITERATION}): it is emulated, not accelerated",
            ns,
        )
    return KvmProbe(True, f"a test guest ran at {ns} ns per loop iteration", ns)


def _ioctl(fd: int, request: int, arg: int | bytes | bytearray, what: str) -> int:
    try:
        if isinstance(arg, bytearray):
            result: int | bytes = fcntl.ioctl(fd, request, arg, True)
        else:
            result = fcntl.ioctl(fd, request, arg)
    except OSError as exc:
        raise _Refused(f"{what} failed: {exc.strerror or exc}") from exc
    return result if isinstance(result, int) else 0


def _timed_run(kvm: int) -> float:
    """Build a one-vCPU VM, run the loop, return the seconds KVM_RUN took."""
    version = _ioctl(kvm, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
    if version != KVM_API_VERSION:
        raise _Refused(f"KVM_GET_API_VERSION returned {version}, not {KVM_API_VERSION}")
    vm = _ioctl(kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM")
    memory = mmap.mmap(-1, _GUEST_MEMORY)
    vcpu = -1
    run: mmap.mmap | None = None
    try:
        memory.write(_PROGRAM)
        anchor = ctypes.c_char.from_buffer(memory)
        address = ctypes.addressof(anchor)
        del anchor  # the mapping stays; only the export that pins it must go before close()
        region = struct.pack("<IIQQQ", 0, 0, 0, _GUEST_MEMORY, address)
        _ioctl(vm, KVM_SET_USER_MEMORY_REGION, region, "KVM_SET_USER_MEMORY_REGION")
        vcpu = _ioctl(vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU")
        size = _ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")
        run = mmap.mmap(vcpu, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        sregs = bytearray(_SREGS_SIZE)
        _ioctl(vcpu, KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
        struct.pack_into("<QIH", sregs, 0, 0, 0xFFFF, 0)  # cs: base 0, selector 0
        _ioctl(vcpu, KVM_SET_SREGS, bytes(sregs), "KVM_SET_SREGS")
        regs = bytearray(_REGS_SIZE)
        struct.pack_into("<QQ", regs, 16 * 8, 0, 0x2)  # rip 0, rflags: the reserved bit
        _ioctl(vcpu, KVM_SET_REGS, bytes(regs), "KVM_SET_REGS")
        started = time.perf_counter()
        for _ in range(100):  # a signal may interrupt KVM_RUN; the guest goes on where it was
            _ioctl(vcpu, KVM_RUN, 0, "KVM_RUN")
            reason = struct.unpack_from("<I", run, 8)[0]
            if reason != _KVM_EXIT_INTR:
                break
        elapsed = time.perf_counter() - started
        if reason != _KVM_EXIT_HLT:
            raise _Refused(f"the test guest stopped with KVM exit reason {reason}, not HLT")
        return elapsed
    finally:
        if run is not None:
            run.close()
        if vcpu >= 0:
            os.close(vcpu)
        os.close(vm)
        memory.close()
