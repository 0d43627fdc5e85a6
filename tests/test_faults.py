"""kill -9 at random moments of a recording and of a conversion: nothing recorded or converted
is lost. SLARM_FAULT_RUNS sets how many kills each test makes (default 10; the README's
reliability figures come from SLARM_FAULT_RUNS=30 bash scripts/test tests/test_faults.py -s).
SLARM_FAULT_SEED repeats a run's moments (each test prints its seed)."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, tree_digest, write_config
from slarm.raw import list_episodes, open_episode

pytestmark = pytest.mark.e2e  # the commands as a user runs them (conftest.py)

RUNS = int(os.environ.get("SLARM_FAULT_RUNS", "10"))


def seeded() -> random.Random:
    seed = int(os.environ.get("SLARM_FAULT_SEED", time.time_ns() % 1_000_000))
    print(f"SLARM_FAULT_SEED={seed}")
    return random.Random(seed)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def running(word: str) -> list[int]:
    """Processes whose command line holds `word` (Linux /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if word in cmdline.read_bytes().decode(errors="replace").split("\0"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def kill_at(args: list[str], moment: float, env=None) -> float:
    """Start `python -m ARGS`, SIGKILL it `moment` seconds later (if still running); seconds it ran."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        proc.wait(timeout=moment)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.monotonic() - started


def test_kill_9_while_recording_loses_no_saved_episode(tmp_path):
    """Every complete episode file stays readable and unchanged, a killed episode leaves at most a
    .partial file (never a damaged .h5), and the next session resumes after the highest number."""
    rng = seeded()
    cfg = write_config(tmp_path)
    folder = tmp_path / "raw" / "so101_pickplace_v1"
    args = ["slarm.capture.cli", "--config", str(cfg), "--sim", "--episodes", "3", "--episode-time", "0.7", "--preview", "off"]
    saved: dict[str, str] = {}
    unfinished = 0
    for run in range(RUNS):
        kill_at(args, rng.uniform(0.5, 8.0))
        complete, partial = list_episodes(folder)
        for path in complete:
            with open_episode(path) as ep:
                assert ep.frame_count > 0, f"run {run}: {path.name} is complete and has frames"
            if path.name in saved:
                assert digest(path) == saved[path.name], f"run {run}: {path.name} changed"
            saved[path.name] = digest(path)
        assert set(saved) == {p.name for p in complete}, f"run {run}: a saved episode is gone"
        for p in partial:  # what a kill leaves: never taken for an episode; capture notes and ignores it
            p.unlink()
        unfinished += len(partial)
    print(f"{RUNS} kills: {len(saved)} episodes saved, all kept unchanged and readable; {unfinished} killed "
          "mid-episode left a .partial file, none a damaged episode")
    r = subprocess.run([sys.executable, "-m", *args[:-6], "--episodes", "1", "--episode-time", "0.5",
                        "--preview", "off"], cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    complete, _ = list_episodes(folder)
    assert len(complete) == len(saved) + 1 and set(saved) <= {p.name for p in complete}


def test_kill_9_while_converting_leaves_the_old_or_the_new_dataset(raw, tmp_path):
    """An append to a dataset of 10 episodes killed at any moment leaves the dataset as it was or
    with the new episodes, loadable by LeRobot, the raw files untouched; the same command then
    completes."""
    import h5py
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    rng = seeded()
    out = tmp_path / "ds"
    base = tmp_path / "base" / raw.name
    base.mkdir(parents=True)
    for k in range(10):  # copies of one episode, each under a uuid of its own
        copy = base / f"episode_{k:06d}.h5"
        shutil.copy(sorted(raw.glob("*.h5"))[0], copy)
        with h5py.File(copy, "r+") as f:
            f.attrs["episode_uuid"] = str(uuid.uuid4())
    r = subprocess.run([sys.executable, "-m", "slarm.convert.cli", str(base), str(out)], cwd=ROOT,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    old = tmp_path / "old"
    shutil.copytree(out, old)
    before, raw_before = tree_digest(out), tree_digest(raw)
    args = ["slarm.convert.cli", str(raw), str(out), "--workers", "2"]
    whole = kill_at(args, 600)  # an append that runs to the end: the moments to kill it at lie within
    assert LeRobotDataset("local/test", root=out, video_backend="pyav").num_episodes == 12
    shutil.rmtree(out)
    shutil.copytree(old, out)
    outcomes = {"old": 0, "new": 0}
    for run in range(RUNS):
        kill_at(args, rng.uniform(0.0, whole * 1.1))
        deadline = time.monotonic() + 5
        while running(str(out)) and time.monotonic() < deadline:  # workers end with it (PR_SET_PDEATHSIG)
            time.sleep(0.05)
        assert not running(str(out)), f"run {run}: no worker outlives slarm-convert"
        episodes = LeRobotDataset("local/test", root=out, video_backend="pyav").num_episodes
        assert episodes in (10, 12), f"run {run}: {episodes} episodes"
        if episodes == 10:
            assert tree_digest(out) == before, f"run {run}: the old dataset, exactly"
        outcomes["old" if episodes == 10 else "new"] += 1
        assert tree_digest(raw) == raw_before, f"run {run}: the raw files are untouched"
        if episodes == 12:  # back to the ten-episode dataset, to kill the next append
            shutil.rmtree(out)
            shutil.copytree(old, out)
    print(f"{RUNS} kills within an append of {whole:.1f}s: {outcomes['old']} left the old dataset, "
          f"{outcomes['new']} the new one")
    r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and "done: 2 episodes added, 0 already there" in r.stdout, r.stdout + r.stderr
    assert LeRobotDataset("local/test", root=out, video_backend="pyav").num_episodes == 12
    assert not list(tmp_path.glob(".slarm-work-*")), "work folders of killed runs are removed"
