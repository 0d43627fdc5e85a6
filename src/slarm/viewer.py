"""Rerun's viewer and web server as processes of their own, started from the rerun-sdk that is
installed with slarm (wherever slarm runs from: an activated environment or not, pipx, uv
tool), their output in a log file rather than in the middle of the status line.

- `open_viewer()`: the desktop viewer (`--preview spawn`, `slarm-inspect --rerun`). It stays
  open after the command ends, as Rerun's own spawn leaves it. One that stops at once (a
  graphics driver it cannot use) is ViewerError, with its last words and its log's name.
- `serve()`: the web viewer and its data server (`--preview serve`), listening on one address
  (127.0.0.1 unless asked): the SDK's in-process server listens on every interface. It ends
  with the process that started it, even when that one is killed (Linux).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from slarm.common import stop_process

WEB_PORT, GRPC_PORT = 9090, 9876  # Rerun's own defaults: the web viewer (HTTP) and the data (gRPC)
LOOPBACK = "127.0.0.1"
START_S = 15.0  # a viewer on a slow machine (software rendering) takes a few seconds to listen


class ViewerError(RuntimeError):
    """A Rerun viewer or server cannot be started; the message says why and what to do."""


@dataclass
class Process:
    """A started Rerun process and the log file its output goes to."""

    proc: subprocess.Popen | None
    log: Path | None
    url: str

    def died(self) -> str | None:
        """Its last words, if it has ended with an error; None while it runs (or ended well)."""
        if self.proc is None or self.proc.poll() in (None, 0):
            return None
        return last_words(self.log)

    def stop(self) -> None:
        stop_process(self.proc)
        self.forget_log()

    def forget_log(self) -> None:
        if self.log is not None:
            self.log.unlink(missing_ok=True)  # a viewer left open writes on into the unlinked file


def rerun_binary() -> Path:
    """The Rerun executable of the installed rerun-sdk: it sits in the rerun_cli package."""
    import rerun_cli

    binary = Path(rerun_cli.__file__).parent / ("rerun.exe" if sys.platform == "win32" else "rerun")
    if not binary.is_file():
        raise ViewerError(f"rerun-sdk's viewer executable is missing ({binary}); reinstall slarm (pip install "
                          "--force-reinstall rerun-sdk)")
    return binary


VIEWER_FAILED = "Use --preview serve and open the URL it prints in a browser (or --preview off)"


def open_viewer(port: int = GRPC_PORT, memory_limit: str = "25%", then: str = VIEWER_FAILED) -> Process:
    """The desktop viewer, listening for data on `port`; one already open there is used. `then`
    says what to do when it cannot start."""
    url = f"rerun+http://{LOOPBACK}:{port}/proxy"
    if listening(port):
        return Process(None, None, url)
    log = _log_file("viewer")
    with log.open("wb") as out:
        proc = subprocess.Popen([str(rerun_binary()), "--port", str(port), "--memory-limit", memory_limit,
                                 "--expect-data-soon"], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)  # stays open after us; no Ctrl-C from our terminal
    started = Process(proc, log, url)
    _wait(started, port, "the Rerun viewer", then)
    return started


def serve(bind: str = LOOPBACK, web_port: int = WEB_PORT, grpc_port: int = GRPC_PORT) -> Process:
    """The web viewer and data server on `bind`; Process.url is the page to open."""
    log = _log_file("server")
    with log.open("wb") as out:
        proc = subprocess.Popen([str(rerun_binary()), "--serve-web", "--bind", bind, "--port", str(grpc_port),
                                 "--web-viewer-port", str(web_port), "--server-memory-limit", "256MB",
                                 "--newest-first"], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    host = "localhost" if is_loopback(bind) else socket.gethostname() if bind in ("0.0.0.0", "::") else bind
    started = Process(proc, log, f"http://{host}:{web_port}/?url=rerun%2Bhttp://{host}:{grpc_port}/proxy")
    for port in (grpc_port, web_port):
        _wait(started, port, "the preview server", f"Is port {web_port} or {grpc_port} taken (another slarm-capture, "
              "a Rerun viewer)? Use --preview off to record without it")
    return started


def data_url(grpc_port: int = GRPC_PORT) -> str:
    """Where this process sends its data to a served preview (always through the loopback)."""
    return f"rerun+http://{LOOPBACK}:{grpc_port}/proxy"


def last_words(log: Path | None, width: int = 240) -> str:
    """The error a Rerun process ended with: its last line that says Error (else its last line),
    without colour codes."""
    try:
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
                 for line in log.read_text(errors="replace").splitlines()] if log else []
    except OSError:
        lines = []
    lines = [line for line in lines if line]
    said = next((line for line in reversed(lines) if line.startswith("Error")), lines[-1] if lines else "no output")
    return said if len(said) <= width else said[: width - 3] + "..."


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def listening(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def ssh_login() -> str:
    """user@host of this computer, for the ssh command that opens a served preview from another one."""
    try:
        import getpass

        user = getpass.getuser()
    except Exception:  # no user name in this environment (a container without one)
        user = "USER"
    return f"{user}@{socket.gethostname()}"


def _wait(started: Process, port: int, what: str, then: str) -> None:
    deadline = time.monotonic() + START_S
    while not listening(port):
        if started.proc.poll() is not None or time.monotonic() > deadline:
            words = last_words(started.log)
            started.proc.kill() if started.proc.poll() is None else None
            raise ViewerError(f"{what} did not start: {words} (its output: {started.log}). {then}")
        time.sleep(0.05)


def _log_file(what: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f"slarm-rerun-{what}-", suffix=".log")
    os.close(fd)
    return Path(name)


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
