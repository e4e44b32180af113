"""A seccomp filter for the python node's sandbox: no new namespaces, no kernel interfaces code has no use for.

The sandboxed code runs as a plain uid, but Linux lets any uid create a user namespace, and
inside one it holds every capability over that namespace: it can mount file systems and reach
the large part of the kernel that is otherwise root-only, which is where most kernel escapes
are found. bubblewrap loads this classic-BPF program (``--seccomp FD``) just before it runs the
interpreter: ``unshare``, ``setns``, ``clone`` with a namespace flag and the mount calls fail
with EPERM; ``clone3`` fails with ENOSYS, which glibc answers by falling back to ``clone`` (so
threads, ``fork`` and ``subprocess`` still work); keyrings, ``bpf``, ``perf_event_open``,
``userfaultfd`` and io_uring fail too. Built for x86-64 only: elsewhere ``program()`` is None
and the sandbox runs without it (docs/architecture.md says so).
"""

from __future__ import annotations

import os
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
NAMESPACE_FLAGS = 0x7E020080  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
EPERM, ENOSYS = 1, 38
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

# x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl)
CLONE, CLONE3 = 56, 435
REFUSED = {
    "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "add_key": 248, "request_key": 249, "keyctl": 250, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427,
}

# struct seccomp_data: nr at 0, arch at 4, args[0] (low half on little-endian) at 16.
LD_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program() -> bytes | None:
    """The filter as bytes for bwrap's ``--seccomp``, or None where it is not built for this CPU."""
    if os.uname().machine != "x86_64":
        return None
    refuse = _op(RET, RET_ERRNO | EPERM)
    ops = [_op(LD_ABS, 4), _op(JEQ, AUDIT_ARCH_X86_64, jt=1), refuse,  # another ABI (i386): refused outright
           _op(LD_ABS, 0), _op(JGE, X32_SYSCALL_BIT, jf=1), refuse]  # the x32 ABI: refused outright
    for nr in sorted(REFUSED.values()):
        ops += [_op(JEQ, nr, jf=1), refuse]
    ops += [_op(JEQ, CLONE3, jf=1), _op(RET, RET_ERRNO | ENOSYS)]
    ops += [_op(JEQ, CLONE, jf=3), _op(LD_ABS, 16), _op(JSET, NAMESPACE_FLAGS, jf=1), refuse]
    ops.append(_op(RET, RET_ALLOW))
    return b"".join(ops)
