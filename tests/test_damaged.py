"""Damaged input is named and skipped, never fatal, never silent: slarm-convert, slarm-inspect
and capture's resume, on raw files damaged in every way tests/damage.py knows."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import ROOT, capture, write_config
from damage import DAMAGE, bit_rot, damaged_copy, frames, gap

pytestmark = pytest.mark.e2e  # the commands as a user runs them (conftest.py)


def run(module: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)


def finite(value) -> bool:
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_file_is_named_and_skipped_and_the_others_converted(raw, tmp_path, how):
    good = sorted(raw.glob("*.h5"))
    bad = damaged_copy(good[0], raw / "episode_000002.h5", how)
    out = tmp_path / "ds"

    r = run("slarm.convert.cli", raw, out, "--workers", "2")
    said = r.stdout + r.stderr
    assert r.returncode == 0, said
    assert "Traceback" not in said and "Corrupt JPEG" not in said, said
    warning = next((line for line in r.stderr.splitlines() if str(bad) in line), "")
    assert warning.startswith(f"warning: {bad}: ") and "skipped" in warning, r.stderr
    assert "done: 2 episodes added, 0 already there, 1 damaged skipped" in r.stdout, said
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert finite(stats) and "observation.state" in stats
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/test", root=out, video_backend="pyav")
    assert ds.num_episodes == 2
    slarm = json.loads((out / "meta" / "slarm.json").read_text())
    assert [e["source"] for e in slarm["episodes"]] == [f"{raw.name}/{p.name}" for p in good], \
        "the raw folder's name and the file's, not the user's absolute path"

    r = run("slarm.inspect.cli", raw, "--json")
    assert "Traceback" not in r.stdout + r.stderr and r.returncode in (0, 1), r.stdout + r.stderr
    report = json.loads(r.stdout)
    unreadable = [u for u in report["unreadable"] if u["file"] == str(bad)]
    flagged = [e for e in report["episodes"] if e["file"] == str(bad) and e["flags"]]
    if how == "bit-rotted JPEGs":  # whole JPEGs, which only a decoder finds corrupt: --decode
        assert not flagged
        r = run("slarm.inspect.cli", raw, "--json", "--decode")
        flagged = [e for e in json.loads(r.stdout)["episodes"] if e["file"] == str(bad) and e["flags"]]
        assert any("Corrupt JPEG data: premature end of data segment" in f for f in flagged[0]["flags"]), flagged
    assert unreadable or flagged, report
    assert r.returncode == (1 if unreadable else 0)
    assert all(e["flags"] == [] for e in report["episodes"] if e["file"] != str(bad)), "good files are not flagged"


def test_frames_the_decoder_finds_corrupt_are_replaced_and_named(raw, tmp_path):
    """A frame whose data broke on the bus still decodes, grey below the break, and libjpeg says
    "Corrupt JPEG data" on stderr: such a frame counts as a broken one, replaced by its neighbour
    and named, and libjpeg's line never reaches the terminal."""
    file = sorted(raw.glob("*.h5"))[0]
    frames(bit_rot, share=0.05)(file)
    r = run("slarm.convert.cli", raw, tmp_path / "ds", "--workers", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"warning: {file}: camera wrist: frames 1, 2 could not be decoded" in r.stderr, r.stderr
    assert "Corrupt JPEG" not in r.stdout + r.stderr
    assert "done: 2 episodes added" in r.stdout and ", 2 undecodable replaced)" in r.stdout


def test_a_longer_max_gap_lets_a_paused_episode_through(raw, tmp_path):
    paused = sorted(raw.glob("*.h5"))[0]
    gap(2)(paused)
    r = run("slarm.inspect.cli", paused, "--json")
    assert any(f.startswith("a gap of 2.0s after tick 19") for f in json.loads(r.stdout)["episodes"][0]["flags"])
    r = run("slarm.convert.cli", raw, tmp_path / "ds", "--max-gap", "2.5")
    assert r.returncode == 0 and "done: 2 episodes added" in r.stdout, r.stdout + r.stderr
    assert "(60 repeated for missed ticks)" in r.stdout, "the pause is filled, as the user asked"
    r = run("slarm.inspect.cli", paused, "--json", "--max-gap", "2.5")
    assert not any("gap" in f for f in json.loads(r.stdout)["episodes"][0]["flags"]), r.stdout


def test_all_files_damaged_is_a_failure_that_names_them(raw, tmp_path):
    for p in raw.glob("*.h5"):
        p.write_text("not HDF5")
    r = run("slarm.convert.cli", raw, tmp_path / "ds")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("not a readable HDF5 file") == 2
    assert "no complete raw episodes in" in r.stderr and "(2 damaged files)" in r.stderr


def test_resume_after_a_damaged_last_episode_records_after_it(tmp_path):
    """The newest episode is damaged (a disk that filled while it was copied back): the session
    names it, leaves it as it is, and records the next one after the highest number."""
    cfg = write_config(tmp_path)
    args = ("--config", str(cfg), "--sim", "--episodes", "1", "--episode-time", "1", "--preview", "off")
    assert capture(*args).returncode == 0
    folder = tmp_path / "raw" / "so101_pickplace_v1"
    damaged_copy(folder / "episode_000000.h5", folder / "episode_000001.h5", "object header of the state")
    r = capture(*args)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert f"warning: {folder}/episode_000001.h5: damaged" in r.stderr and "it is left as it is" in r.stderr
    assert "next is episode 2" in r.stdout
    assert sorted(p.name for p in folder.glob("*.h5")) == [f"episode_00000{i}.h5" for i in range(3)]
    with h5py.File(folder / "episode_000002.h5", "r") as f:
        assert len(f["state"]) > 20


def test_a_zero_frame_episode_is_flagged_not_ok(raw):
    bad = damaged_copy(sorted(raw.glob("*.h5"))[0], raw / "episode_000002.h5", "no frames")
    r = run("slarm.inspect.cli", raw)
    row = next(line for line in r.stdout.splitlines() if line.startswith("2 "))
    assert "no frames" in row and not row.endswith("ok"), r.stdout
    assert bad.exists()


def test_frames_cut_short_or_of_another_size_are_flagged_without_decoding(raw):
    file = sorted(raw.glob("*.h5"))[0]
    with h5py.File(file, "r+") as f:
        f["cameras/wrist"].attrs["width"] = 1280
    r = run("slarm.inspect.cli", file, "--json")
    flags = json.loads(r.stdout)["episodes"][0]["flags"]
    assert any("1920x1080, not the 1280x1080 the file says" in f for f in flags), flags
    other = sorted(raw.glob("*.h5"))[1]
    with h5py.File(other, "r+") as f:
        stored = f["cameras/wrist/frames"]
        stored[5] = stored[5][:1000]
    flags = json.loads(run("slarm.inspect.cli", other, "--json").stdout)["episodes"][0]["flags"]
    assert flags == ["wrist: frame 5: no JPEG end marker (cut short)"], flags


def test_values_that_become_file_names_are_checked(tmp_path):
    for bad in ("../../etc/passwd", "arm/left", ".."):
        cfg = json.loads((ROOT / "config.json").read_text())
        cfg["robot"]["id"] = bad
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        r = capture("--config", str(path), "--sim", "--episodes", "1", "--episode-time", "1")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines() == [f"error: config error: {path}: robot.id: {bad!r} becomes a file name (the "
                                                 f"calibration file {bad}.json): give a plain name without / or .., "
                                                 "e.g. \"my_so101_follower\""], r.stderr


def test_hub_errors_are_printed_without_tokens():
    from slarm.convert.hub import redact

    text = ("401 Client Error: Unauthorized for url: https://huggingface.co/api/repos/create "
            "headers={'authorization': 'Bearer hf_AbCdEfGhIjKlMnOpQrStUv', 'user-agent': 'x'} token=hf_Zz99Zz99Zz99")
    said = redact(text)
    assert "hf_" not in said and "Bearer" not in said and "<redacted>" in said
    assert said.startswith("401 Client Error: Unauthorized for url: https://huggingface.co/api/repos/create")


def test_the_simulated_hardware_folder_goes_with_the_session(tmp_path):
    import os
    import signal
    import tempfile

    env = {k: v for k, v in os.environ.items() if k != "SLARM_KEEP_SIM"}
    cfg = write_config(tmp_path)
    args = [sys.executable, "-m", "slarm.capture.cli", "--config", str(cfg), "--sim", "--episodes", "1",
            "--episode-time", "30", "--preview", "off"]
    for stop in (signal.SIGINT, signal.SIGKILL):
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        folder = None
        for line in proc.stdout:
            if line.startswith("simulated hardware in "):
                folder = Path(line.split()[3])
            if line.startswith("Recording episode") or "recording 1 episode" in line:
                break
        assert folder is not None and folder.is_dir()
        proc.send_signal(stop)
        proc.communicate(timeout=30)
        if stop == signal.SIGINT:
            assert proc.returncode == 130 or proc.returncode == 0
            assert not folder.exists(), "removed when the session ends"
        else:
            assert folder.exists()
            r = subprocess.run(args[:-4] + ["--episodes", "1", "--episode-time", "0.5", "--preview", "off"], cwd=ROOT,
                               env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stdout + r.stderr
            assert not folder.exists(), "a killed session's folder is removed by the next session"
    assert not [p for p in Path(tempfile.gettempdir()).glob("slarm-sim-*") if not (p / "keep").exists()
                and (p / "owner-pid").exists() and int((p / "owner-pid").read_text()) == proc.pid]


def test_lerobots_temporary_files_go_in_the_work_folder(raw, tmp_path):
    """LeRobot joins the videos of appended episodes through temporary files as large as a video
    file: on the dataset's disk, in the run's work folder, not in $TMPDIR."""
    import os

    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    first = tmp_path / "first" / raw.name
    first.mkdir(parents=True)
    shutil.copy(sorted(raw.glob("*.h5"))[0], first)
    out = tmp_path / "ds"
    for folder in (first, raw):
        r = subprocess.run([sys.executable, "-m", "slarm.convert.cli", str(folder), str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    assert list(tmp.iterdir()) == [], "nothing left in $TMPDIR"


def test_a_work_folder_left_after_the_swap_is_removed_when_nothing_is_added(raw, tmp_path):
    out = tmp_path / "ds"
    assert run("slarm.convert.cli", raw, out).returncode == 0
    left = tmp_path / ".slarm-work-ds-99999" / "dataset"  # a run killed right after the swap: the old dataset
    shutil.copytree(out, left)
    r = run("slarm.convert.cli", raw, out)
    assert r.returncode == 0 and "nothing to add" in r.stdout, r.stdout + r.stderr
    assert not left.parent.exists()
    np.testing.assert_equal(sorted(p.name for p in tmp_path.iterdir()), sorted([".ds.slarm-convert-lock", "ds", "raw"]))
