"""On a desktop: keys from the X server (pynput), the Rerun viewer found and started from the
installed rerun-sdk, and a viewer that dies never holding a command open. A real X server
(Xvfb) and real key events (xdotool); scripts/test installs both where it can (as root, apt)."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, episodes_dir, write_config

pytestmark = pytest.mark.e2e  # the commands as a user runs them (conftest.py)

needs_x = pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("xdotool") is None,
                             reason="needs Xvfb and xdotool (Debian: apt-get install xvfb xdotool; scripts/test "
                                    "installs them when run as root)")


@pytest.fixture
def display(tmp_path):
    """A fresh X server (Xvfb) on a display number it picks itself; its DISPLAY value."""
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    assert number, "Xvfb did not start"
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


class Lines:
    """A process's output, line by line, read on a thread so that waiting for one can time out."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.seen, self._q = proc, [], queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not seen; output:\n" + "\n".join(self.seen))


def desktop_env(display: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "SSH_CONNECTION")}
    return {**env, "DISPLAY": display, **extra}


def key(display: str, name: str) -> None:
    subprocess.run(["xdotool", "key", name], env=desktop_env(display), check=True, timeout=10)


@needs_x
def test_desktop_keys_record_save_discard_and_quit(tmp_path, display):
    """SPACE, R and ESC as X key events (the keys of a desktop, read by pynput while any window
    has the focus): an episode saved, one discarded, then quit."""
    config = write_config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "slarm.capture.cli", "--config", str(config), "--sim", "--preview", "off"],
                            cwd=ROOT, env=desktop_env(display), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = Lines(proc)
    try:
        out.wait_for("(pynput keys)")
        out.wait_for("Idle")
        key(display, "space")
        out.wait_for("Recording episode 0")
        time.sleep(1.0)
        key(display, "space")
        out.wait_for("saved episode 0")
        key(display, "space")
        out.wait_for("Recording episode 1")
        time.sleep(0.5)
        key(display, "r")
        out.wait_for("discarded episode 1")
        key(display, "Escape")
        out.wait_for("done: 1 episode saved, 1 discarded")
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert sorted(p.name for p in episodes_dir(config).iterdir()) == ["episode_000000.h5"]


def fake_viewer(tmp_path: Path, says: str) -> dict:
    """An environment whose rerun-sdk viewer executable says `says` and exits at once, as Rerun's
    does on a graphics driver it cannot use: a rerun_cli package ahead of the installed one."""
    package = tmp_path / "fake" / "rerun_cli"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    binary = package / "rerun"
    binary.write_text(f"#!/bin/sh\necho '{says}' >&2\nexit 1\n")
    binary.chmod(0o755)
    return {"PYTHONPATH": f"{package.parent}{os.pathsep}{ROOT}"}


DRIVER = "Error: app creation error: Adapter does not support drawing to texture format R32Float."


@needs_x
def test_a_viewer_that_dies_at_once_is_explained_and_holds_nothing_open(tmp_path, display):
    config = write_config(tmp_path)
    env = desktop_env(display, **fake_viewer(tmp_path, DRIVER))
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "slarm.capture.cli", "--config", str(config), "--sim", "--episodes", "1",
                        "--episode-time", "1"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    warning = next(line for line in r.stderr.splitlines() if "no live preview" in line)
    assert f"the Rerun viewer did not start: {DRIVER}" in warning and "--preview serve" in warning, warning
    assert "done: 1 episode saved" in r.stdout
    assert time.monotonic() - started < 60

    r = subprocess.run([sys.executable, "-m", "slarm.inspect.cli", str(episodes_dir(config)), "--rerun", "0"], cwd=ROOT,
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and f"the Rerun viewer did not start: {DRIVER}" in r.stderr, r.stdout + r.stderr
    assert "--save" in r.stderr and "Traceback" not in r.stderr


def test_the_viewer_is_found_without_an_activated_environment(tmp_path):
    """Run by path (.venv/bin/slarm-capture, pipx, uv tool): PATH does not hold the environment's
    bin folder (where Rerun's own spawn looks), and the viewer executable is still found and runs."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    env["PATH"] = "/usr/bin:/bin"
    code = ("from slarm.viewer import rerun_binary; import subprocess; "
            "print(subprocess.run([str(rerun_binary()), '--version'], capture_output=True, text=True).stdout)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("rerun"), r.stdout + r.stderr
