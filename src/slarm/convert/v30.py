"""Write LeRobot v3.0 datasets through LeRobot's own API.

Workers prepare the episodes (prepare.py: decode, resize, encode); one LeRobot writer in the
main process adds them, in order, to a new dataset. When appending, LeRobot's aggregate_datasets
then merges the existing dataset and the new one into a fresh folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import joint_units
from .prepare import Prepared
from .settings import Settings
from .sources import Source
from .stats import image_stats

REPO_ID = "local/slarm"  # LeRobot needs a repo id even for local folders


def features(src: Source, s: Settings) -> dict:
    """The dataset's features, spelled out: state and action with the joint names, one video per camera."""
    names = joint_units.names(src, s.joint_units)
    feats = {
        "observation.state": {"dtype": "float32", "shape": (len(names),), "names": names},
        "action": {"dtype": "float32", "shape": (len(names),), "names": names},
    }
    for cam, _, _ in src.cameras:
        feats[f"observation.images.{cam}"] = {
            "dtype": "video", "shape": (s.height, s.width, 3), "names": ["height", "width", "channels"],
        }
    return feats


class Writer:
    """LeRobot's dataset writer (LeRobotDataset.create, save_episode, finalize), given episodes
    whose videos are already encoded (prepare.py). LeRobot writes the parquet files, places each
    video in its video files, and writes the metadata and stats, as it does when recording. Each
    video file is joined once (VideoAppends); join_videos_once=False keeps LeRobot's own appends,
    to compare the two."""

    def __init__(self, root: Path, src: Source, s: Settings, join_videos_once: bool = True):
        from lerobot.configs.video import RGBEncoderConfig
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
        from lerobot.datasets.video_utils import StreamingVideoEncoder

        class Encoded(StreamingVideoEncoder):
            """The streaming-encoder hook of LeRobot's writer, handing over videos encoded by a worker."""

            videos: dict = {}

            def finish_episode(self):
                return self.videos

        self.encoded = Encoded(src.fps, RGBEncoderConfig(vcodec=s.codec))
        skip_embedding_without_images()

        class Dataset(LeRobotDataset):
            _build_streaming_encoder = staticmethod(lambda *args: self.encoded)

        self.dataset = Dataset.create(
            repo_id=REPO_ID, fps=src.fps, features=features(src, s), root=root, robot_type=src.robot_type or None,
            use_videos=True, rgb_encoder=self.encoded._rgb_encoder, streaming_encoding=True, video_backend="pyav",
        )
        self.appends = VideoAppends(root.with_name(root.name + "-videos-to-append"),
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


class VideoAppends:
    """LeRobot's writer appends each episode's video to the current video file of its camera with
    concatenate_video_files([file, episode], file), which remuxes the whole file: N episodes in
    one file remux N²/2 episodes' packets (300 episodes of 300 frames: ~100 s of CPU in this
    process, which has other work to do). Inside `with` (around each save_episode), those appends
    are collected, and each file gets them at flush(), with LeRobot's concatenate_video_files: all
    but the last in one call, then the last, as LeRobot's writer appends it. The same bytes as
    LeRobot's writer writes: the concat demuxer offsets each input by the durations before it
    either way, and the MP4 header's max bit rate is taken from the first input, here too the
    file of all but the last episode (tests/test_convert.py compares the two writers' files byte
    for byte).

    LeRobot starts a new file when file size + episode size would reach its video file size
    limit; for a file with appends waiting, the size it is told is the file's plus theirs (a
    little more than the joined file: each part carries its own MP4 header), and when that could
    reach the limit with the episode being added, the appends are made first and it is told the
    real size. So every file ends with the episode it would end with in LeRobot's own writer."""

    def __init__(self, folder: Path, limit_mb, enabled: bool = True):
        from lerobot.datasets import dataset_writer

        self.module, self.folder, self.limit_mb = dataset_writer, folder, limit_mb
        self.concatenate = getattr(dataset_writer, "concatenate_video_files", None)
        self.size_in_mb = getattr(dataset_writer, "get_file_size_in_mb", None)
        # off: LeRobot's own appends (also with a LeRobot that lacks these names)
        self.enabled = enabled and self.concatenate is not None and self.size_in_mb is not None
        self.waiting: dict[Path, list[Path]] = {}  # video file -> episode videos to append, in order
        self.next_episode_mb = 0.0  # the largest video of the episode being added (Writer.add)
        self.held = 0

    def __enter__(self) -> VideoAppends:
        """Until the block ends, however it ends, collect the writer's appends."""
        if self.enabled:
            self.module.concatenate_video_files, self.module.get_file_size_in_mb = self._append_later, self._size_in_mb
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.module.concatenate_video_files, self.module.get_file_size_in_mb = self.concatenate, self.size_in_mb

    def flush(self, file: Path | None = None) -> None:
        """Make the appends waiting for `file` (all files: None)."""
        for f in [file] if file is not None else list(self.waiting):
            episodes = self.waiting.pop(f, [])
            if len(episodes) > 1:
                self.concatenate([f, *episodes[:-1]], f)
            if episodes:  # the last one on its own, as LeRobot appends it: the MP4 header's max
                self.concatenate([f, episodes[-1]], f)  # bit rate comes from the first input's
            for e in episodes:
                e.unlink()

    def _append_later(self, inputs, output, *args, **kwargs) -> None:
        inputs, output = [Path(p) for p in inputs], Path(output)
        if len(inputs) != 2 or inputs[0] != output or args or kwargs:  # not the writer's append: now
            for f in {output, *inputs}:
                self.flush(f)
            self.concatenate(inputs, output, *args, **kwargs)
            return
        self.folder.mkdir(exist_ok=True)
        held = self.folder / f"{self.held}{inputs[1].suffix}"  # the writer deletes the episode's folder next
        os.replace(inputs[1], held)
        self.held += 1
        self.waiting.setdefault(output, []).append(held)

    def _size_in_mb(self, path) -> float:
        path = Path(path)
        episodes = self.waiting.get(path)
        if not episodes:
            return self.size_in_mb(path)
        estimate = self.size_in_mb(path) + sum(self.size_in_mb(e) for e in episodes)
        if estimate + self.next_episode_mb >= self.limit_mb():
            self.flush(path)
            return self.size_in_mb(path)
        return estimate


def skip_embedding_without_images() -> None:
    """LeRobot's save_episode passes every episode's table through embed_images, a row-by-row
    datasets.map that embeds image and audio files; for a table without such columns (state,
    action, indices: the videos are separate files) it returns the same table and costs about
    0.1 s of CPU per 300 frames. Skip the map then; otherwise LeRobot's embed_images runs as before."""
    from datasets.features.features import require_storage_embed
    from lerobot.datasets import dataset_writer

    embed_images = dataset_writer.embed_images
    if getattr(embed_images, "only_when_needed", False):
        return

    def embed_when_needed(dataset):
        if any(require_storage_embed(feature) for feature in dataset.features.values()):
            return embed_images(dataset)
        return dataset

    embed_when_needed.only_when_needed = True
    dataset_writer.embed_images = embed_when_needed


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
