"""Write LeRobot v3.0 datasets through LeRobot's own API.

One raw episode becomes one small dataset (LeRobotDataset.create, add_frame, save_episode,
finalize), in a worker process; LeRobot's aggregate_datasets then merges the existing
dataset and the new episodes, in order, into a fresh folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from capture.episode_file import open_episode

from .frames import training_images
from .settings import Settings
from .sources import Source
from .timeline import actions, grid_rows

REPO_ID = "local/slarm"  # LeRobot needs a repo id even for local folders


def features(src: Source, s: Settings) -> dict:
    """The dataset's features, spelled out: state and action with the joint names, one video per camera."""
    names = list(src.state_names)
    feats = {
        "observation.state": {"dtype": "float32", "shape": (len(names),), "names": names},
        "action": {"dtype": "float32", "shape": (len(names),), "names": names},
    }
    for cam, _, _ in src.cameras:
        feats[f"observation.images.{cam}"] = {
            "dtype": "video", "shape": (s.height, s.width, 3), "names": ["height", "width", "channels"],
        }
    return feats


def encoder(codec: str):
    """LeRobot's encoder settings for a codec. Raises ValueError if the codec cannot encode here:
    FFmpeg may list a hardware encoder (h264_nvenc) that fails to open without its GPU, so open it once."""
    from fractions import Fraction

    import av
    from lerobot.configs.video import RGBEncoderConfig

    cfg = RGBEncoderConfig(vcodec=codec)
    try:
        ctx = av.CodecContext.create(cfg.vcodec, "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 64, 64, cfg.pix_fmt, Fraction(1, 30)
        ctx.open()
    except Exception as e:
        raise ValueError(f"the encoder cannot be opened on this machine ({e})") from None
    return cfg


def write_episode(src: Source, root: Path, s: Settings, encoder_threads: int | None = None) -> dict:
    """Convert one raw episode into a one-episode LeRobot dataset at `root`. Runs in a worker process."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from .video import EpisodeEncoder

    with open_episode(src.path) as ep:
        rows, repeated = grid_rows(ep.tick_index)
        state = ep.state[rows].astype(np.float32)
        action = actions(state, s.action)
        task = s.task or ep.task
        video = EpisodeEncoder(ep.fps, encoder(s.codec), len(rows), encoder_threads)

        class Dataset(LeRobotDataset):  # LeRobot's writer, streaming into our encoder (see video.py)
            _build_streaming_encoder = staticmethod(lambda *args: video)

        ds = Dataset.create(
            repo_id=REPO_ID, fps=ep.fps, features=features(src, s), root=root,
            robot_type=ep.attrs.get("robot_type"), use_videos=True, rgb_encoder=video._rgb_encoder,
            streaming_encoding=True, encoder_threads=encoder_threads, video_backend="pyav",
        )
        for j, images in enumerate(training_images(ep, src.cameras, rows, s)):
            frame = {"observation.state": state[j], "action": action[j], "task": task}
            for cam, image in images.items():
                frame[f"observation.images.{cam}"] = image
            ds.add_frame(frame)
        ds.save_episode()
        ds.finalize()
    return {"frames": len(rows), "repeated": repeated}


def merge(roots: list[Path], out: Path) -> None:
    """LeRobot's aggregate_datasets: the datasets at `roots`, in order, into a new dataset at `out`."""
    from lerobot.datasets.aggregate import aggregate_datasets

    aggregate_datasets(repo_ids=[REPO_ID] * len(roots), aggr_repo_id=REPO_ID, roots=roots, aggr_root=out)


def verify(root: Path, episodes: int, frames: int, camera_keys: list[str]) -> None:
    """Reopen with LeRobotDataset and check counts and one decoded frame per camera. Raises on a problem."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(REPO_ID, root=root, video_backend="pyav")
    if ds.num_episodes != episodes or ds.num_frames != frames:
        raise RuntimeError(f"expected {episodes} episodes / {frames} frames, LeRobot reads "
                           f"{ds.num_episodes} / {ds.num_frames}")
    item = ds[len(ds) - 1]
    for key in camera_keys:
        img = item[key]
        if img.ndim != 3 or img.shape[0] != 3:
            raise RuntimeError(f"{key}: decoded frame has shape {tuple(img.shape)}")
