"""What a user does with a converted dataset next: LeRobot's own training code reads it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from slarm.capture.sim import DeviceProcess
from slarm.capture.sim.camera_server import barcode_value
from slarm.convert.timeline import grid_rows
from slarm.raw import open_episode
from test_convert import convert, load, motor_ticks, one_episode_dataset

pytestmark = pytest.mark.e2e  # the commands as a user runs them (conftest.py)


def test_every_frame_reaches_training_as_smolvla_asks_for_it(raw, tmp_path):
    """LeRobot's training loader, asked what SmolVLA asks for (the state and image of a frame, and
    the 50 actions from it on), over a dataset that was appended to: every frame decodes at its
    timestamp and shows the camera frame of its tick, and every action chunk holds the actions
    that follow in its own episode, marked as padding past the episode's end."""
    import torch
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    out = one_episode_dataset(raw, tmp_path)
    r = convert(raw, out)
    assert r.returncode == 0 and "done: 1 episode added, 1 already there" in r.stdout, r.stdout + r.stderr

    policy = SmolVLAConfig(device="cpu")
    wanted = resolve_delta_timestamps(policy, LeRobotDatasetMetadata("local/test", root=out))
    assert len(wanted["action"]) == policy.chunk_size == 50
    ds = LeRobotDataset("local/test", root=out, delta_timestamps=wanted, video_backend="pyav")
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2, shuffle=False)  # as lerobot-train reads
    items = {k: [] for k in ("episode_index", "frame_index", "observation.state", "action", "action_is_pad",
                             "observation.images.wrist")}
    for batch in loader:
        for k in items:
            items[k].append(batch[k].numpy())
    got = {k: np.concatenate(v) for k, v in items.items()}
    assert len(got["frame_index"]) == len(ds) == 90

    for e, path in enumerate(sorted(raw.glob("*.h5"))):
        mine = got["episode_index"] == e
        with open_episode(path) as ep:
            rows = grid_rows(ep.tick_index)[0]
            state = ep.state[rows].astype(np.float32)
            seq = ep.cameras["wrist"].frame_seq[rows]
        n = len(rows)
        np.testing.assert_array_equal(got["frame_index"][mine], np.arange(n))
        np.testing.assert_array_equal(got["observation.state"][mine][:, 0], state)
        chunks, pads = got["action"][mine], got["action_is_pad"][mine]  # action = state (the default)
        for t in range(n):
            left = min(50, n - t)  # the actions that follow in this episode, then padding
            np.testing.assert_array_equal(chunks[t, :left], state[t:t + left], err_msg=f"episode {e}, frame {t}")
            assert not pads[t, :left].any() and pads[t, left:].all(), f"episode {e}, frame {t}: padding"
        images = got["observation.images.wrist"][mine]  # (n, 3, 256, 256), 0..1
        shown = [barcode_value((im.transpose(1, 2, 0) * 255).round().astype(np.uint8)) for im in images]
        assert shown == list(seq % 128), f"episode {e}: each frame shows the camera frame of its tick"


def test_lerobot_trains_a_policy_on_the_dataset(raw, tmp_path):
    """LeRobot's training script (lerobot-train) trains a policy on a converted dataset and saves a
    checkpoint that knows its state and camera: a small ACT from scratch, 2 steps, on the CPU (a
    SmolVLA needs its base model from the Hub)."""
    out = tmp_path / "ds"
    assert convert(raw, out).returncode == 0
    small_act = ["--policy.type=act", "--policy.pretrained_backbone_weights=null", "--policy.dim_model=64",
                 "--policy.n_heads=2", "--policy.dim_feedforward=128", "--policy.n_encoder_layers=1",
                 "--policy.n_decoder_layers=1", "--policy.n_vae_encoder_layers=1", "--policy.chunk_size=10",
                 "--policy.n_action_steps=10", "--policy.device=cpu", "--policy.push_to_hub=false"]
    train = [str(Path(sys.executable).parent / "lerobot-train"), "--dataset.repo_id=local/test",
             f"--dataset.root={out}", "--dataset.use_imagenet_stats=false", *small_act, "--steps=2",
             "--batch_size=4", "--num_workers=1", "--log_freq=1", "--save_freq=2",
             f"--output_dir={tmp_path / 'train'}", "--wandb.enable=false"]
    r = subprocess.run(train, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "dataset.num_frames=90" in log and "dataset.num_episodes=2" in log
    losses = [float(x) for x in re.findall(r"step:\d+ .*? loss:([-\d.e+na]+)", log)]
    assert len(losses) == 2 and np.isfinite(losses).all(), log[-3000:]
    saved = json.loads((tmp_path / "train/checkpoints/last/pretrained_model/config.json").read_text())
    assert saved["input_features"] == {"observation.state": {"type": "STATE", "shape": [6]},
                                       "observation.images.wrist": {"type": "VISUAL", "shape": [3, 256, 256]}}
    assert saved["output_features"] == {"action": {"type": "ACTION", "shape": [6]}}
    # LeRobot trains on without a feature's stats (it then leaves that feature unnormalized): the
    # checkpoint must hold this dataset's mean and std of each feature (of the images too, when
    # not told to use ImageNet's: --dataset.use_imagenet_stats=false)
    from safetensors.numpy import load_file

    model = tmp_path / "train/checkpoints/last/pretrained_model"
    steps = json.loads((model / "policy_preprocessor.json").read_text())["steps"]
    normalizer = next(s for s in steps if s["registry_name"] == "normalizer_processor")
    held = load_file(model / normalizer["state_file"])
    stats = json.loads((out / "meta/stats.json").read_text())
    for key in ("observation.state", "action", "observation.images.wrist"):
        for stat in ("mean", "std"):
            np.testing.assert_allclose(held[f"{key}.{stat}"], stats[key][stat], rtol=1e-6, err_msg=f"{key} {stat}")


def test_lerobot_replays_the_dataset_on_the_arm_in_its_units(raw, tmp_path):
    """LeRobot's so101_follower sends a dataset's actions to the arm as it sends a policy's:
    lerobot-replay, on the simulated arm, of an episode converted with --joint-units lerobot
    sends each motor, frame by frame, the position it was recorded at (within a tick: LeRobot
    rounds down)."""
    out = tmp_path / "ds"
    assert convert(raw, out, "--joint-units", "lerobot").returncode == 0
    events = tmp_path / "arm-events.txt"
    arm = DeviceProcess("arm", ["slarm.capture.sim.arm_server", "--link", str(tmp_path / "ttyARM"), "--calibration-dir",
                                str(tmp_path / "calibration"), "--robot-id", "follower", "--events", str(events)], tmp_path)
    arm.ensure_running()
    try:
        replay = [str(Path(sys.executable).parent / "lerobot-replay"), "--robot.type=so101_follower",
                  f"--robot.port={tmp_path / 'ttyARM'}", "--robot.id=follower",
                  f"--robot.calibration_dir={tmp_path / 'calibration'}", "--dataset.repo_id=local/test",
                  f"--dataset.root={out}", "--dataset.episode=0", "--play_sounds=false"]
        r = subprocess.run(replay, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        arm.stop()
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]

    goals = np.array([int(w.split()[2]) for w in events.read_text().splitlines() if w.startswith("goal")]).reshape(-1, 6)
    with open_episode(sorted(raw.glob("*.h5"))[0]) as ep:
        ticks = motor_ticks(ep.attrs["calibration"], ep.state[grid_rows(ep.tick_index)[0]]).round()  # frame by frame
    assert goals.shape == ticks.shape, "each frame's action, to every motor"
    assert np.abs(goals - ticks).max() <= 1, np.abs(goals - ticks).max(axis=0)
    assert np.ptp(goals, axis=0).min() > 20, "every motor is sent along the episode"


def test_a_dataset_in_the_cameras_aspect_reaches_smolvla_as_the_camera_does_at_rollout(raw, tmp_path):
    """At rollout LeRobot hands the policy each camera's frame as it comes (1920x1080 here), and
    SmolVLA letterboxes every image into 512x512 (LeRobot's resize_with_pad, black on the top). An
    image converted at the camera's aspect ratio (--size 512x288) reaches the model as the camera
    frame then does; one stretched to 256x256 (the default) fills the square with a squashed scene."""
    import torch
    from lerobot.policies.common.vla_utils import resize_with_pad

    with open_episode(sorted(raw.glob("*.h5"))[0]) as ep:
        assert (ep.cameras["wrist"].width, ep.cameras["wrist"].height) == (1920, 1080)
        frame = cv2.cvtColor(cv2.imdecode(np.asarray(ep.frame("wrist", 10)), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def to_smolvla(image: torch.Tensor) -> torch.Tensor:  # (3, H, W) in [0, 1], as the model gets it
        return resize_with_pad(image[None].float(), 512, 512, pad_value=0)[0]

    at_rollout = to_smolvla(torch.from_numpy(frame).permute(2, 0, 1) / 255)
    differs = {}
    for size in ("512x288", "256x256"):
        out = tmp_path / size
        assert convert(raw, out, "--size", size).returncode == 0
        in_training = to_smolvla(load(out)[10]["observation.images.wrist"])
        differs[size] = (in_training - at_rollout).abs().mean().item()
    assert differs["512x288"] < 0.03, differs
    assert differs["256x256"] > 0.1, differs
