"""Write LeRobot v3.0 datasets through LeRobot's own API.

Workers prepare the episodes (prepare.py: decode, resize, encode); one LeRobot writer in the
main process adds them, in order, to a new dataset. When appending, LeRobot's aggregate_datasets
then merges the existing dataset and the new one into a fresh folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from slarm import lerobot_private as private

from .features import features
from .prepare import Prepared
from .settings import Settings
from .sources import Source
from .stats import image_stats

REPO_ID = "local/slarm"  # LeRobot needs a repo id even for local folders


class Writer:
    """LeRobot's dataset writer (LeRobotDataset.create, save_episode, finalize), given episodes
    whose videos are already encoded (prepare.py). LeRobot writes the parquet files, places each
    video in its video files, and writes the metadata and stats, as it does when recording. Each
    video file is joined once (lerobot_private.VideoAppends); join_videos_once=False keeps
    LeRobot's own appends, to compare the two."""

    def __init__(self, root: Path, src: Source, s: Settings, join_videos_once: bool = True):
        self.encoded, self.dataset = private.dataset_taking_encoded_videos(
            root, REPO_ID, src.fps, features(src, s), src.robot_type or None, s.codec)
        private.skip_embedding_without_images()
        self.appends = private.VideoAppends(root.with_name(root.name + "-videos-to-append"),
                                            lambda: self.dataset.meta.video_files_size_in_mb, join_videos_once)

    def add(self, ep: Prepared) -> None:
        """One episode, after the ones added before."""
        n = ep.frames
        self.appends.next_episode_mb = max(os.path.getsize(p) for p in ep.videos.values()) / 1024**2
        self.encoded.videos = {f"observation.images.{cam}": (path, image_stats(ep.histograms[cam]))
                               for cam, path in ep.videos.items()}
        buffer = {"size": n, "task": [ep.task] * n, "observation.state": ep.state, "action": ep.action,
                  "timestamp": np.arange(n) / self.dataset.fps, "frame_index": np.arange(n),
                  "episode_index": self.dataset.meta.total_episodes, "index": None, "task_index": None}
        buffer |= {f"observation.images.{cam}": [None] * n for cam in ep.videos}
        with self.appends:
            self.dataset.save_episode(episode_data=buffer)

    def finish(self) -> None:
        self.appends.flush()
        self.dataset.finalize()


def use_cache(folder: Path | None) -> None:
    """Where the datasets library (LeRobot's reader) keeps the Arrow copy it makes of every
    parquet file LeRobot reads (appending, verifying, pushing): in `folder`, a work folder that
    goes at the end, or (None) back in the user's cache, ~/.cache/huggingface/datasets, where
    each run left 2 to 4 copies of the dataset's table, under names no later run reads."""
    from datasets import config

    config.HF_DATASETS_CACHE = folder or Path(os.getenv("HF_DATASETS_CACHE", config.DEFAULT_HF_DATASETS_CACHE))


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
