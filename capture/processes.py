"""Small process helpers shared by the capture session, the simulated devices and slarm-convert."""

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

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


def hold_lock(path: Path):
    """The lock file at `path`, open and locked, which keeps other runs out (of a raw folder, of a
    dataset) while this process lives: the operating system drops the lock when it ends, even
    when killed. None when another process holds it. Where the filesystem has no locks (NFS
    without its lock service: ENOLCK; Lustre without flock: ENOSYS), the file is open but
    unlocked: the work goes on, without this guard."""
    f = open(path, "a")
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    except OSError:  # no locks on this filesystem
        pass
    return f


class _Stops:
    came = False  # a stop signal has come
    held = False  # inside stops_held()


def stop_on_signals() -> None:
    """Ctrl-C (SIGINT), SIGTERM (kill, a job scheduler, systemd) and SIGHUP (the terminal closed)
    all end the program as a KeyboardInterrupt in the main thread, so that its clean-up runs;
    inside stops_held() the interrupt waits until the block is done."""

    def stop(signum, frame):
        _Stops.came = True
        if not _Stops.held:
            raise KeyboardInterrupt

    for sig in STOPS:
        signal.signal(sig, stop)


def raise_if_stopped() -> None:
    """KeyboardInterrupt if a stop has come. The handler's own KeyboardInterrupt can be lost:
    raised while a C extension runs Python code (e.g. pandas' modules as they are imported),
    it may be swallowed there. Call this where the program may stop cleanly."""
    if _Stops.came:
        raise KeyboardInterrupt


@contextmanager
def stops_held():
    """A step that must not be cut in two: a stop (see stop_on_signals) that comes meanwhile
    raises KeyboardInterrupt right after it, one that came before, right away. Python runs
    signal handlers in the main thread, whichever thread the signal reached, so this holds in
    a process with many threads."""
    raise_if_stopped()
    _Stops.held = True
    try:
        yield
    finally:
        _Stops.held = False
    raise_if_stopped()
