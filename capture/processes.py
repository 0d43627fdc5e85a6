"""Small process helpers shared by the capture session, the simulated devices and slarm-convert."""

import logging
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


def device_users(path: str) -> list[str]:
    """The other processes that have the device `path` open (the arm's serial port, a camera),
    as "pid 4242 (lerobot-teleoperate --robot.port=...)". Linux only (/proc); without root, only
    this user's processes are seen."""
    device = os.path.realpath(path)
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:  # no /proc (macOS)
        return []
    users = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # another user's process, or gone
            continue
        if any(_link(f"/proc/{pid}/fd/{fd}") == device for fd in fds):
            users.append(f"pid {pid} ({_command(pid)})")
    return users


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _command(pid: str, width: int = 80) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    if not words[0]:  # a process that is exiting
        return "?"
    if len(words) > 1 and os.path.basename(words[0]).startswith(b"python"):  # python .../lerobot-teleoperate ...
        words = words[1:]
    words[0] = os.path.basename(words[0])
    text = b" ".join(words).decode(errors="replace")
    return text if len(text) <= width else text[:width - 3] + "..."


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


EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130  # every slarm command's exit status


def run_command(command) -> None:
    """Run a slarm click command and exit with its status: 0 done, 1 failed, 2 refused before any
    work (click's own usage errors included), 130 interrupted (click would say "Aborted!" and
    exit 1). The process exits at once, without Python's teardown: the command has closed its
    files by then, and the teardown of what it imported (torch, rerun-sdk) only costs time, or
    waits on a Rerun viewer that died."""
    import click

    try:
        status = command.main(standalone_mode=False)
        status = status if isinstance(status, int) else EXIT_OK
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else EXIT_FAILURE if e.code else EXIT_OK
    except click.ClickException as e:
        e.show()
        status = e.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("error: interrupted", err=True)
        status = EXIT_INTERRUPTED
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(status)
