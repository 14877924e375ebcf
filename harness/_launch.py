"""Exec shim that ties a service process's life to the harness process.

Run as ``python -I -S _launch.py PARENT_PID UID GID -- PROGRAM ARGS...`` (UID/GID ``-`` to
keep the current ones). It drops privileges when asked, asks the kernel for SIGKILL when its
parent dies (``PR_SET_PDEATHSIG``, which a credential change would clear, hence after the
drop), checks the parent did not die in between, then replaces itself with PROGRAM. Python's
``preexec_fn`` is avoided because it is unsafe in a threaded parent.

Standard library only: it runs with ``-S`` and possibly as an unprivileged user.
"""

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:  # returns only on a usage or setup error
    if len(argv) < 5 or argv[3] != "--":
        sys.stderr.write("usage: _launch.py PARENT_PID UID|- GID|- -- PROGRAM [ARGS...]\n")
        return 2
    parent_pid, uid, gid = int(argv[0]), argv[1], argv[2]
    program = argv[4:]
    if gid != "-":
        os.setgroups([])
        os.setgid(int(gid))
    if uid != "-":
        os.setuid(int(uid))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        sys.stderr.write(f"_launch: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}\n")
        return 1
    if os.getppid() != parent_pid:
        return 1  # the harness died before the death signal was armed
    os.execv(program[0], program)  # noqa: S606 - replaces this process, never returns


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
