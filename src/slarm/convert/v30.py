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


def merge(roots: list[Path], out: Path, linked: bool = True) -> None:
    """LeRobot's aggregate_datasets: the datasets at `roots`, in order, into a new dataset at
    `out`, its files cut at the sizes the first one's are; the files it would copy unchanged are
    linked (lerobot_private.linked_aggregation; linked=False: LeRobot's copies, to compare)."""
    from lerobot.datasets import aggregate

    args = dict(repo_ids=[REPO_ID] * len(roots), aggr_repo_id=REPO_ID, roots=roots, aggr_root=out, **_file_sizes(roots[0]))
    if not linked:
        aggregate.aggregate_datasets(**args)
        return
    with private.linked_aggregation() as linking, private.in_memory_reads():
        linking.aggregate_datasets(**args)


def _file_sizes(root: Path) -> dict:
    """The data and video file sizes the dataset at `root` is cut at (meta/info.json)."""
    import json

    info = json.loads((root / "meta" / "info.json").read_text())
    return {k: info[k] for k in ("data_files_size_in_mb", "video_files_size_in_mb") if info.get(k)}


def verify(root: Path, episodes: int, frames: int, camera_keys: list[str], new: int | None = None) -> None:
    """Reopen with LeRobotDataset: the counts its metadata and every data file say, and the last
    `new` episodes (None: all) read in full, with one decoded frame per camera. Reading only the
    new episodes keeps an append's reading (and the datasets library's cache of what it reads) in
    proportion to what is added; the other episodes' files are those that were verified when
    they were added, or the one file each that was extended, whose rows are counted here. Raises
    on a problem."""
    import pyarrow.parquet as pq
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    chosen = None if new is None else list(range(episodes - new, episodes))
    with private.in_memory_reads():
        ds = LeRobotDataset(REPO_ID, root=root, episodes=chosen, video_backend="pyav")
    rows = sum(pq.read_metadata(p).num_rows for p in sorted((root / "data").glob("*/*.parquet")))
    if (ds.meta.total_episodes, ds.meta.total_frames, rows) != (episodes, frames, frames):
        raise RuntimeError(f"expected {episodes} episodes / {frames} frames, LeRobot reads "
                           f"{ds.meta.total_episodes} / {ds.meta.total_frames} ({rows} rows in the data files)")
    if chosen is not None and ds.num_episodes != len(chosen):
        raise RuntimeError(f"the {new} new episodes read back as {ds.num_episodes}")
    item = ds[len(ds) - 1]
    for key in camera_keys:
        img = item[key]
        if img.ndim != 3 or img.shape[0] != 3:
            raise RuntimeError(f"{key}: decoded frame has shape {tuple(img.shape)}")
