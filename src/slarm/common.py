"""Helpers every stage shares: stop signals, locks, child processes, and the wording of counts and errors."""

import errno
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

STOPS = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if sys.platform != "win32" else ())


def stop_process(proc) -> None:
    """End a child process (subprocess.Popen) of ours: asked first, killed after 3 s."""
    import subprocess

    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()


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


# --- text ----------------------------------------------------------------------------------------

def first_line(e: BaseException) -> str:
    """An error's first line (its type when it has no text): for messages that must stay one line."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def disk_full(e: BaseException | None) -> bool:
    """Whether `e`, or an error that led to it, is a full disk (or an exhausted quota)."""
    while e is not None:
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


def count(n: int, noun: str) -> str:
    """'1 episode', '2 episodes'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def listed(items, shown: int = 5) -> str:
    """'3, 4, 9', or the first `shown` and how many in all: '1, 2, 3, ... (40 in all)'."""
    items = [str(i) for i in items]
    return ", ".join(items[:shown]) + (f", ... ({len(items)} in all)" if len(items) > shown else "")
