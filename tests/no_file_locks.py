"""Run a command as on a network disk without file locks: every flock() of the process (and of
what it starts) fails with the given error, as on NFS without its lock service (ENOLCK) or on
Lustre mounted without flock (ENOSYS). A seccomp filter, installed before the command starts;
Linux on x86_64 or aarch64. Exit 99 where the filter cannot be installed.

    python tests/no_file_locks.py ENOLCK python -m slarm.capture.cli --config ...
"""

import ctypes
import errno
import os
import platform
import struct
import sys

# architecture: (AUDIT_ARCH_* value, flock's system call number)
ARCHES = {"x86_64": (0xC000003E, 73), "aarch64": (0xC00000B7, 32)}
LOAD, JUMP_IF_EQUAL, RETURN = 0x20, 0x15, 0x06  # classic BPF: ld [k], jeq #k, ret #k
SECCOMP_RET_ERRNO, SECCOMP_RET_ALLOW = 0x00050000, 0x7FFF0000
PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PR_SET_NO_NEW_PRIVS = 22, 2, 38


class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def fail_flock(error: int) -> None:
    arch, flock = ARCHES[platform.machine()]
    steps = [(LOAD, 0, 0, 4), (JUMP_IF_EQUAL, 0, 3, arch),  # seccomp_data.arch
             (LOAD, 0, 0, 0), (JUMP_IF_EQUAL, 0, 1, flock),  # seccomp_data.nr
             (RETURN, 0, 0, SECCOMP_RET_ERRNO | error), (RETURN, 0, 0, SECCOMP_RET_ALLOW)]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *s) for s in steps))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or \
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(Program(len(steps), ctypes.addressof(code))), 0, 0):
        raise OSError(ctypes.get_errno(), "seccomp filter refused")


if __name__ == "__main__":
    try:
        fail_flock(getattr(errno, sys.argv[1]))
    except (KeyError, OSError, AttributeError) as e:
        print(f"cannot fail flock() on this machine: {e!r}", file=sys.stderr)
        sys.exit(99)
    os.execvp(sys.argv[2], sys.argv[2:])
