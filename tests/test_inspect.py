"""slarm-inspect on simulated recordings (plus episodes with known defects), and batch
conversion of several raw folders into one dataset."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from conftest import ROOT, capture, episodes_dir, tree_digest, write_config
from slarm.capture.cameras import Frame
from slarm.mjpeg import with_huffman_tables
from slarm.raw import CameraInfo, EpisodeWriter, Tick, open_episode
from test_convert import convert, load
from test_mjpeg import tables_before_scan

pytestmark = pytest.mark.e2e  # the commands as a user runs them (conftest.py)

NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def inspect(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slarm.inspect.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL)


def write_episode(path: Path, ticks: list[int], state_at, fps: int = 30, seq_at=lambda k: k) -> None:
    """An episode with the given tick numbers (gaps = missed ticks), state and camera frame numbers."""
    jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()
    w = EpisodeWriter(path, attrs={"fps": fps, "task": "test defects", "robot_type": "so101", "robot_id": "t",
                                   "state_source": "test", "episode_uuid": str(uuid.uuid4()), "start_time": "",
                                   "calibration": {}, "software": {}},
                      state_names=NAMES, state_attrs={"units": "rad"},
                      cameras=[CameraInfo("wrist", 64, 48, fps, "jpeg", "test", "0")])
    for k in ticks:
        w.put(Tick(k, k / fps, state_at(k), {"wrist": Frame(jpeg, seq_at(k), k / fps)}))
    w.save()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """Two simulated episodes, then one with missed ticks, one with a frozen state and repeated
    camera frames, a truncated file and an unfinished one."""
    folder = tmp_path_factory.mktemp("inspect")
    cfg = write_config(folder)
    r = capture("--config", str(cfg), "--sim", "--episodes", "2", "--episode-time", "1.5", "--preview", "off")
    assert r.returncode == 0, r.stdout + r.stderr
    raw = episodes_dir(cfg)
    moving = lambda k: np.sin(np.arange(6) + k / 10).astype(np.float32)  # noqa: E731
    write_episode(raw / "episode_000002.h5", [k for k in range(90) if not 30 <= k < 60], moving)
    write_episode(raw / "episode_000003.h5", list(range(90)),
                  lambda k: moving(20 if 20 <= k <= 70 else k),  # still from tick 20 to 70: 1.67 s
                  seq_at=lambda k: k // 2)  # a 15 fps camera at 30 Hz: every other tick repeats a frame
    (raw / "episode_000004.h5").write_bytes((raw / "episode_000000.h5").read_bytes()[:50_000])
    (raw / "episode_000005.h5.partial").write_bytes(b"")
    return raw


def test_table_and_json_match_the_files_and_flag_defects(recordings):
    before = tree_digest(recordings)
    r = inspect(recordings, "--json")
    assert r.returncode == 1, r.stderr  # the truncated file: listed, the rest shown, and the exit status says so
    report = json.loads(r.stdout)
    eps = {e["index"]: e for e in report["episodes"]}
    assert sorted(eps) == [0, 1, 2, 3]
    for i in (0, 1):
        with open_episode(recordings / f"episode_00000{i}.h5") as ep:
            assert eps[i]["frames"] == ep.frame_count
            assert eps[i]["duration_s"] == pytest.approx(ep.timestamp[-1] - ep.timestamp[0], abs=1e-3)
            assert eps[i]["uuid"] == ep.uuid
            # the simulated camera runs at the tick rate; now and then a tick still gets the previous frame
            repeats = int(np.count_nonzero(np.diff(ep.cameras["wrist"].frame_seq) == 0))
            missed = int(ep.tick_index[-1] + 1 - ep.frame_count)
        assert eps[i]["fps"] == 30 and eps[i]["missed_ticks"] == missed
        assert eps[i]["cameras"][0]["width"] == 1920 and eps[i]["cameras"][0]["encoding"] == "jpeg"
        assert eps[i]["cameras"][0]["repeated_frames"] == repeats
        if not missed:  # as usual; a busy CI machine can stall the sampler now and then (counted, and flagged)
            assert eps[i]["achieved_fps"] == pytest.approx(30, abs=1)
            assert eps[i]["flags"] == ([f"wrist: {repeats} repeated frames"] if repeats else []), eps[i]["flags"]
    assert eps[2]["missed_ticks"] == 30 and eps[2]["frames"] == 60
    assert any(f.startswith("low fps") for f in eps[2]["flags"])
    assert eps[3]["longest_frozen_s"] == pytest.approx(50 / 30, abs=0.01)
    assert any(f.startswith("state frozen 1.7s") for f in eps[3]["flags"])
    assert "wrist: 45 repeated frames" in eps[3]["flags"]
    assert [Path(u["file"]).name for u in report["unreadable"]] == ["episode_000004.h5"]
    assert "the file is cut short: 50000 of its " in report["unreadable"][0]["reason"]
    assert [Path(f).name for f in report["unfinished"]] == ["episode_000005.h5.partial"]
    assert report["totals"]["episodes"] == 4
    assert report["totals"]["flagged"] == sum(1 for e in eps.values() if e["flags"]) >= 2
    assert report["totals"]["frames"] == sum(e["frames"] for e in eps.values())

    r = inspect(recordings)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0].split()[:5] == ["#", "uuid", "task", "duration", "frames"]
    row0 = next(line for line in lines if line.startswith("0 "))
    assert f"{eps[0]['frames']}" in row0.split() and "wrist 1920x1080 jpeg" in row0
    assert row0.endswith("; ".join(eps[0]["flags"]) or "ok")
    assert "unreadable: " in r.stdout and "unfinished: " in r.stdout
    flagged = report["totals"]["flagged"]
    assert lines[-1].startswith("total: 4 episodes") and f"{flagged} flagged, 1 unfinished, 1 unreadable" in lines[-1]
    r = inspect(recordings / "episode_000001.h5")
    assert r.returncode == 0 and r.stdout.splitlines()[-1].endswith("0 unfinished, 0 unreadable"), r.stdout + r.stderr
    r = inspect(recordings / "episode_000004.h5")
    assert r.returncode == 1 and "unreadable: " in r.stdout
    assert tree_digest(recordings) == before, "slarm-inspect never modifies the raw folder"


def test_tick_numbers_that_do_not_match_the_timestamps_are_a_damaged_file(tmp_path):
    """A flipped bit in tick_index would otherwise place the episode's rows on a time grid of a
    billion frames (convert) or report nonsense (inspect)."""
    damage = [(2, 1, "tick_index does not increase row by row"),
              (9, 10**9, "timestamps and tick numbers disagree by 33333333.")]
    for i, (row, value, says) in enumerate(damage):
        path = tmp_path / f"episode_00000{i}.h5"
        write_episode(path, list(range(10)), lambda k: np.zeros(6, np.float32))
        assert inspect(path).returncode == 0
        with h5py.File(path, "r+") as f:
            f["tick_index"][row] = value
        r = inspect(path, "--json")
        assert r.returncode == 1, r.stdout + r.stderr
        assert says in json.loads(r.stdout)["unreadable"][0]["reason"]


def test_plot_writes_a_readable_png(recordings, tmp_path):
    out = tmp_path / "review.png"
    r = inspect(recordings, "--plot", out)
    assert r.returncode == 1, r.stderr  # drawn; 1: the folder holds a truncated file
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 600 and img.shape[1] > 800
    assert img.std() > 20, "not blank"
    assert (img < 100).mean() > 0.005, "lines and text are drawn"

    (tmp_path / "a_file").write_text("")
    for bad, says in ((tmp_path / "review.txt", "give a file name ending in .png"),
                      (tmp_path / "a_file" / "review.png", "cannot write it")):
        r = inspect(recordings, "--plot", bad)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_rerun_replays_an_episode_on_its_timeline(recordings, tmp_path):
    out = tmp_path / "ep1.rrd"
    r = inspect(recordings / "episode_000001.h5", "--rerun", "1", "--save", out)
    assert r.returncode == 0, r.stderr
    import rerun.experimental as rx

    rows: dict[str, int] = {}
    first_image = None
    for chunk in rx.RrdReader(out).stream():
        rows[chunk.entity_path] = rows.get(chunk.entity_path, 0) + chunk.num_rows
        if chunk.entity_path == "/camera/wrist" and first_image is None:
            first_image = chunk.to_record_batch().column("EncodedImage:blob")[0].values[0].values.to_numpy().tobytes()
    with open_episode(recordings / "episode_000001.h5") as ep:
        n = ep.frame_count
        stored = ep.frame("wrist", 0).tobytes()
    assert rows["/camera/wrist"] == n
    assert all(rows[f"/state/{name}"] == n for name in NAMES)
    # the simulated webcam, as many real ones, leaves out the Huffman tables; the viewer gets them
    assert not tables_before_scan(stored) and tables_before_scan(first_image)
    assert first_image == with_huffman_tables(stored)

    r = inspect(recordings, "--rerun", "9", "--save", out)
    assert r.returncode == 2 and "no complete episode 9" in r.stderr and "episodes: 0, 1, 2, 3" in r.stderr
    r = inspect(recordings, "--rerun", "1", "--save", out / "ep1.rrd")  # out is a file, not a folder
    assert r.returncode == 2 and f"cannot write {out / 'ep1.rrd'}" in r.stderr and "Traceback" not in r.stderr


def test_missing_target_is_one_clear_error(tmp_path):
    r = inspect(tmp_path / "nowhere")
    assert r.returncode == 2 and "no such folder or episode file" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "raw" / "pickplace").mkdir(parents=True)
    (tmp_path / "raw" / "pickplace" / "episode_000000.h5.partial").touch()
    r = inspect(tmp_path / "raw")  # raw_dir, not raw_dir/dataset_name
    assert r.stdout.splitlines()[-1] == \
        f"note: {tmp_path / 'raw'} holds no episodes itself, but its folder {tmp_path / 'raw' / 'pickplace'} does: " \
        "give that one"


def test_several_raw_dirs_into_one_dataset_then_rerun_adds_nothing(tmp_path):
    """Days recorded at different camera sizes go into one dataset; another fps does not."""
    days = []
    camera_720p = {"name": "wrist", "capture_width": 1280, "capture_height": 720}
    for day, changes in (("day1", {}), ("day2", {"camera": camera_720p}), ("day3", {"recording": {"fps": 15}})):
        (tmp_path / day).mkdir()
        cfg = write_config(tmp_path / day, **changes)
        r = capture("--config", str(cfg), "--sim", "--episodes", "1", "--episode-time", "1", "--preview", "off")
        assert r.returncode == 0, r.stdout + r.stderr
        days.append(episodes_dir(cfg))
    out = tmp_path / "ds"
    r = convert(*days, out)
    assert r.returncode == 2 and f"{days[2]}" in r.stderr and "was recorded with other fps (15) than" in r.stderr
    assert not out.exists()
    days = days[:2]
    r = convert(*days, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "note: frames were captured at 1280x720, 1920x1080; all become 256x256 (stretch)" in r.stdout
    assert "done: 2 episodes added, 0 already there" in r.stdout and "frames/s" in r.stdout
    ds = load(out)
    assert ds.num_episodes == 2
    ends = ds.meta.episodes["dataset_to_index"]
    assert all(ds[int(i)]["observation.images.wrist"].shape == (3, 256, 256) for i in (0, ends[0]))
    digest = tree_digest(out)
    r = convert(*days, out)
    assert r.returncode == 0 and "nothing to add" in r.stdout and "already holds all 2 episodes" in r.stdout
    assert tree_digest(out) == digest
    shutil.rmtree(days[0])  # converting the second day alone adds nothing either
    r = convert(days[1], out)
    assert r.returncode == 0 and "nothing to add" in r.stdout
