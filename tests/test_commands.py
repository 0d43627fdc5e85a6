"""The three commands behave alike: one exit-status convention (0 done, 1 failed, 2 refused
before any work, 130 interrupted), said in each --help; and --episode-time is seconds of the
clock, whatever the ticks missed."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, episodes_dir, write_config
from slarm.raw import open_episode

pytestmark = pytest.mark.e2e  # the commands as a user runs them (conftest.py)

COMMANDS = {"slarm-capture": "slarm.capture.cli", "slarm-convert": "slarm.convert.cli", "slarm-inspect": "slarm.inspect.cli"}


def run(module: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_help_states_the_exit_statuses(command):
    r = run(COMMANDS[command], "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "Exit status: 0 done" in text and "; 1 failed" in text and "; 2 refused before any work" in text
    assert "; 130 interrupted" in text


@pytest.mark.parametrize("command, args", [
    ("slarm-capture", ["--config", "config.json", "--no-such-option"]),
    ("slarm-capture", ["--config", "config.json", "--episodes", "2"]),  # without --episode-time
    ("slarm-convert", ["raw", "ds", "--size", "big"]),
    ("slarm-convert", []),
    ("slarm-inspect", ["no/such/folder"]),
    ("slarm-inspect", ["raw", "--plot", "review.txt"]),
])
def test_bad_arguments_are_refused_with_2_and_no_traceback(command, args, tmp_path):
    r = subprocess.run([sys.executable, "-m", COMMANDS[command], *args], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120, stdin=subprocess.DEVNULL, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip(), r.stderr


def interrupt(args: list[str], after: str, stop: signal.Signals, timeout: float = 120) -> tuple[int, str]:
    """Start a command, send it `stop` once its output (or stderr) shows `after`; (exit status, output)."""
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if after in line or time.monotonic() > deadline:
            break
    proc.send_signal(stop)
    rest, _ = proc.communicate(timeout=60)
    return proc.returncode, "".join(seen) + rest


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "SIGTERM"])
def test_an_interrupted_command_exits_130(raw, tmp_path, stop):
    cfg = write_config(tmp_path)
    code, said = interrupt(["slarm.capture.cli", "--config", str(cfg), "--sim", "--episodes", "3", "--episode-time", "30",
                            "--preview", "off"], "recording 3 episodes", stop)
    assert code == 130 and "interrupted" in said and "Traceback" not in said, said
    for i in range(3, 40):  # enough frames that decoding every one takes seconds
        shutil.copy(raw / "episode_000000.h5", raw / f"episode_{i:06d}.h5")
    proc = subprocess.Popen([sys.executable, "-m", "slarm.inspect.cli", str(raw), "--decode"], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "error: interrupted", out + err
    assert "Traceback" not in err


def test_episode_time_is_seconds_of_the_clock_even_when_ticks_are_missed(tmp_path):
    """The recorder is stopped for half a second mid-episode (SIGSTOP: a machine that stalls;
    a second would also make the camera's newest frame look stale, a camera fault): the episode
    still ends 3 s after it began, the missed ticks counted, not recorded later."""
    cfg = write_config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "slarm.capture.cli", "--config", str(cfg), "--sim", "--episodes", "1",
                             "--episode-time", "3", "--preview", "off"], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Recording episode 0"):  # the status line, once the episode has begun
            break
    time.sleep(0.8)
    proc.send_signal(signal.SIGSTOP)
    time.sleep(0.5)
    proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(seen) + out
    with open_episode(episodes_dir(cfg) / "episode_000000.h5") as ep:
        ticks = ep.tick_index[-1] + 1
        assert ticks == 90, f"3 s at 30 fps is 90 ticks of the clock, {ticks} were taken"
        assert ep.timestamp[-1] < 3.0
        assert ep.attrs["missed_ticks"] >= 10, "the stall's ticks are missed, and counted"
        assert np.all(np.diff(ep.tick_index) > 0)
