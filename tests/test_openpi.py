"""The OpenPI teleoperation guide, end to end: a gamepad and two cameras at 10 Hz ->
raw episodes -> LeRobot v2.1 (action = next state), read by lerobot 0.3.3 itself and
converted to v3.0 by LeRobot 0.6's own script."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, capture, episodes_dir, invoke, tree_digest, write_config
from converting import convert
from recording import unplug_during_second_episode
from slarm.convert.cli import main as convert_main
from slarm.convert.timeline import grid_rows
from slarm.raw import open_episode
from test_hub import FakeHub

pytestmark = pytest.mark.e2e  # the commands as a user runs them (conftest.py)

AXES = ["left_x", "left_y", "right_x", "right_y", "l2_trigger", "r2_trigger"]
TASK = "pick up the bottle and place it on the yellow square"
CAMERAS = [
    {"name": "scene", "capture_width": 640, "capture_height": 480, "fps": 30},
    {"name": "wrist", "capture_width": 320, "capture_height": 240, "fps": 15},
]


def gamepad_config(folder: Path, buttons: list[str], name: str = "pad") -> Path:
    return write_config(folder, dataset_name=name, task_description=TASK, cameras=CAMERAS,
                        robot={"type": "gamepad", "buttons": buttons}, recording={"fps": 10})


@pytest.fixture(scope="module")
def pad_raw(tmp_path_factory) -> Path:
    """Two 2 s episodes from the simulated gamepad with L1/R1 (8 values) and two cameras at 10 Hz."""
    folder = tmp_path_factory.mktemp("pad")
    cfg = gamepad_config(folder, ["l1", "r1"])
    r = capture("--config", str(cfg), "--sim", "--episodes", "2", "--episode-time", "2", "--preview", "off")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gamepad 'slarm virtual gamepad' connected: 8 values" in r.stdout
    return episodes_dir(cfg)


@pytest.fixture
def raw(pad_raw, tmp_path) -> Path:
    dst = tmp_path / "raw" / "pad"
    shutil.copytree(pad_raw, dst)
    return dst


def test_gamepad_with_two_cameras_at_10hz(pad_raw, tmp_path):
    files = sorted(pad_raw.glob("*.h5"))
    assert len(files) == 2
    for f in files:
        with open_episode(f) as ep:
            assert ep.fps == 10 and ep.attrs["robot_type"] == "gamepad"
            assert ep.state_names == AXES + ["l1", "r1"]
            assert ep.state.shape == (ep.frame_count, 8) and ep.state.dtype == np.float32
            assert 18 <= ep.frame_count <= 21
            sticks, triggers, buttons = ep.state[:, :4], ep.state[:, 4:6], ep.state[:, 6:]
            assert sticks.min() >= -1 and sticks.max() <= 1 and triggers.min() >= 0 and triggers.max() <= 1
            assert set(np.unique(buttons)) <= {0.0, 1.0}
            assert np.all(np.abs(np.diff(sticks, axis=0)).max(axis=0) > 0), "every stick moves"
            assert np.abs(np.diff(sticks, axis=0)).max() < 0.5, "smoothly, at 10 Hz"
            assert ep.attrs["calibration"]["sdl_mapping"]["leftx"] == "a0", "SDL's mapping is recorded"
            assert sorted(ep.cameras) == ["scene", "wrist"]
            scene, wrist = ep.cameras["scene"], ep.cameras["wrist"]
            assert (scene.width, scene.height, wrist.width, wrist.height) == (640, 480, 320, 240)
            for cam in (scene, wrist):
                assert len(cam.frames) == ep.frame_count
                lag = ep.timestamp - cam.capture_time  # each tick took the camera's latest frame
                assert np.all(lag >= -0.005) and np.all(lag < 0.2), lag
            assert np.all(np.diff(scene.frame_seq) >= 2), "a 30 fps camera sampled at 10 Hz skips frames"

    cfg = gamepad_config(tmp_path, [], name="pad6")
    r = capture("--config", str(cfg), "--sim", "--episodes", "1", "--episode-time", "1", "--preview", "off")
    assert r.returncode == 0, r.stdout + r.stderr
    with open_episode(sorted(episodes_dir(cfg).glob("*.h5"))[0]) as ep:
        assert ep.state_names == AXES and ep.state.shape[1] == 6


def test_gamepad_unplugged_mid_episode(tmp_path):
    cfg = gamepad_config(tmp_path, [])

    def unplug(sim_line: str) -> None:
        assert "(virtual gamepad" in sim_line
        (Path(re.search(r"simulated hardware in (\S+)", sim_line).group(1)) / "unplug-gamepad").touch()

    def check(path: Path) -> None:
        with open_episode(path) as ep:
            assert ep.state_names == AXES and ep.frame_count >= 10

    unplug_during_second_episode(cfg, unplug, device="gamepad", warning="gamepad 'slarm virtual gamepad' was unplugged",
                                 check=check)


def test_bad_gamepad_buttons_are_refused(tmp_path):
    cfg = write_config(tmp_path, robot={"type": "gamepad", "buttons": ["l1", "turbo"]})
    r = capture("--config", str(cfg), "--sim", "--episodes", "1", "--episode-time", "1")
    assert r.returncode == 2
    assert "robot.buttons: expected a list of distinct button names" in r.stderr and "l1, r1" in r.stderr


def test_lerobot_joint_units_are_refused_for_a_gamepad(raw, tmp_path):
    r = convert(raw, tmp_path / "ds", "--joint-units", "lerobot")
    assert r.returncode == 2
    assert "holds no SO-101 joints (state: left_x, left_y, right_x, right_y, l2_trigger, r2_trigger, l1, r1); " \
        "--joint-units lerobot is for SO-101 episodes, leave it out for this robot" in r.stderr, r.stderr
    assert not (tmp_path / "ds").exists()


def v21(raw: Path, out: Path, *args: str):
    return convert(raw, out, "--format", "v2.1", "--action", "next-state", "--size", "224x224", *args)


def test_v21_loads_in_lerobot_033_with_next_state_actions(raw, tmp_path, lerobot_v21_python):
    """lerobot 0.3.3 (OpenPI's) reads the v2.1 dataset frame by frame, and as OpenPI's data loader
    asks for it: each frame with the chunk of actions that follow it, padding flagged past the
    episode's end."""
    out = tmp_path / "openpi"
    r = v21(raw, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"done: 2 episodes added, 0 already there; \d+ frames", r.stdout)
    assert sorted(p.name for p in (out / "data" / "chunk-000").iterdir()) == ["episode_000000.parquet",
                                                                              "episode_000001.parquet"]
    for name in ("info.json", "episodes.jsonl", "episodes_stats.jsonl", "tasks.jsonl"):
        assert (out / "meta" / name).exists(), name

    horizon = 10  # OpenPI's loader asks for the model's action_horizon actions from each frame on
    r = subprocess.run([str(lerobot_v21_python), str(ROOT / "tests" / "read_v21.py"), str(out), str(horizon)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["version"] == "v2.1" and seen["episodes"] == 2
    assert seen["cameras"] == ["observation.images.scene", "observation.images.wrist"]
    assert seen["image_shapes"] == {k: [3, 224, 224] for k in seen["cameras"]}
    assert 0 <= seen["image_range"][0] < seen["image_range"][1] <= 1
    assert seen["tasks"] == [TASK] and seen["names"] == AXES + ["l1", "r1"]
    assert {"observation.state", "action", "observation.images.scene"} <= set(seen["stats_keys"])
    state, action, episode = (np.array(seen[k]) for k in ("state", "action", "episode_index"))
    assert state.shape == (seen["frames"], 8)
    for e in (0, 1):
        s, a = state[episode == e], action[episode == e]
        np.testing.assert_array_equal(a[:-1], s[1:])
        np.testing.assert_array_equal(a[-1], s[-1])
    with open_episode(sorted(raw.glob("*.h5"))[0]) as ep:
        np.testing.assert_array_equal(state[episode == 0], ep.state[grid_rows(ep.tick_index)[0]])
    chunks, pad = np.array(seen["chunks"]), np.array(seen["chunk_pad"])
    assert chunks.shape == (seen["frames"], horizon, 8)
    for e in (0, 1):
        a, c, p = action[episode == e], chunks[episode == e], pad[episode == e]
        for t in range(len(a)):
            left = min(horizon, len(a) - t)  # the actions that follow in this episode, then padding
            np.testing.assert_array_equal(c[t, :left], a[t:t + left], err_msg=f"episode {e}, frame {t}")
            assert not p[t, :left].any() and p[t, left:].all(), f"episode {e}, frame {t}: padding"


def test_v21_converts_to_v30_with_lerobot_06_script(raw, tmp_path):
    out = tmp_path / "openpi"
    assert v21(raw, out).returncode == 0
    r = subprocess.run([sys.executable, "-m", "lerobot.scripts.convert_dataset_v21_to_v30", "--repo-id", "local/pad",
                        "--root", str(out), "--push-to-hub", "false"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/pad", root=out, video_backend="pyav")
    assert ds.meta.info.codebase_version == "v3.0" and ds.num_episodes == 2
    item = ds[len(ds) - 1]
    assert tuple(item["observation.images.scene"].shape) == (3, 224, 224)
    assert tuple(item["observation.state"].shape) == (8,)
    np.testing.assert_array_equal(item["action"].numpy(), item["observation.state"].numpy())


def test_v21_append_rerun_refusal_and_kill(raw, tmp_path):
    from slarm.convert.v21 import verify

    first = tmp_path / "first" / "pad"
    first.mkdir(parents=True)
    shutil.copy(sorted(raw.glob("*.h5"))[1], first)
    out = tmp_path / "openpi"
    assert v21(first, out).returncode == 0
    before = tree_digest(out)

    r = v21(raw, out, "--jpeg-quality", "95")
    assert r.returncode == 2 and "jpeg_quality 80 vs 95" in r.stderr
    r = convert(raw, out, "--action", "next-state", "--size", "224x224")  # v3.0 onto a v2.1 dataset
    assert r.returncode == 2 and "format v2.1 vs v3.0" in r.stderr
    assert tree_digest(out) == before

    for delay in (0.5, 1.5, 2.5):  # killed at any moment: the old dataset or the complete new one
        proc = subprocess.Popen([sys.executable, "-m", "slarm.convert.cli", str(raw), str(out), "--format", "v2.1",
                                 "--action", "next-state", "--size", "224x224", "--workers", "1"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if tree_digest(out) != before:
            break
    r = v21(raw, out)
    assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads((out / "meta" / "info.json").read_text())
    verify(out, 2, info["total_frames"], ["observation.images.scene", "observation.images.wrist"])
    slarm = json.loads((out / "meta" / "slarm.json").read_text())
    assert [Path(e["source"]).name for e in slarm["episodes"]] == ["episode_000001.h5", "episode_000000.h5"]

    digest = tree_digest(out)
    r = v21(raw, out)
    assert r.returncode == 0 and "nothing to add" in r.stdout
    assert tree_digest(out) == digest


def test_v21_push_uploads_the_folder_and_tags_v21(raw, tmp_path, monkeypatch):
    import huggingface_hub

    FakeHub.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    out = tmp_path / "openpi"
    result = invoke(convert_main,
                                [str(raw), str(out), "--format", "v2.1", "--workers", "1",
                                 "--push-to-hub", "me/pad_openpi", "--private"])
    assert result.exit_code == 0, result.output
    calls = {name: kwargs for name, _, kwargs in FakeHub.calls}
    assert calls["create_repo"] == {"repo_id": "me/pad_openpi", "repo_type": "dataset", "private": True,
                                    "exist_ok": True}
    assert Path(calls["upload_folder"]["folder_path"]) == out and calls["upload_folder"]["repo_type"] == "dataset"
    assert calls["create_tag"]["tag"] == "v2.1" and calls["create_tag"]["repo_id"] == "me/pad_openpi"
    assert [c[0] for c in FakeHub.calls] == ["create_repo", "upload_folder", "create_tag"]
