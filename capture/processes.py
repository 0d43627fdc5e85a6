"""Small process helpers shared by the capture session, the simulated devices and slarm-convert."""

import os
import signal
import sys
from contextlib import contextmanager

STOPS = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if sys.platform != "win32" else ())


def alive(pid: int) -> bool:
    """Whether a process with this id exists."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_on_terminate() -> None:
    """SIGTERM (kill, a job scheduler, systemd) and SIGHUP (the terminal closed) end the program
    the way Ctrl-C does: as a KeyboardInterrupt, so that its clean-up runs."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    for sig in STOPS[1:]:
        signal.signal(sig, stop)


@contextmanager
def stops_held():
    """Ctrl-C, SIGTERM and SIGHUP wait until the block is done (a step that must not be cut in
    two); the KeyboardInterrupt comes right after it."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
