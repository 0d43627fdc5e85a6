"""One raw episode made ready for a dataset writer: its frames placed on the time grid, state and
action, and each camera's images resized, with the counts its image stats come from.

`EpisodeFrames` is the loop both formats share: v3.0 encodes its images into a video per camera
(`prepare_episode`, here), v2.1 into JPEGs in a parquet file (v21.write_episode). This is the
heavy part of a conversion (JPEG decoding, resizing, encoding); it runs in worker processes, one
episode each, and imports nothing of LeRobot (see encoding.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slarm.raw import open_episode

from . import joint_units
from .encoding import VideoWriter
from .frames import Undecodable, training_images, yuv420_to_rgb
from .settings import Settings
from .sources import Source
from .stats import ImageHistogram
from .timeline import actions, grid_rows


class Stopped(Exception):
    """slarm-convert has given up on this run (a failure elsewhere, Ctrl-C): stop this episode."""


@dataclass(frozen=True)
class Converted:
    """What converting one episode gave, for the run's summary and warnings."""

    frames: int
    repeated: int  # grid slots filled by repeating a neighbouring tick
    undecodable: dict[str, list[int]]  # camera -> raw frames that could not be decoded, each replaced


class EpisodeFrames:
    """One raw episode on the time grid: `with EpisodeFrames(...) as ep:` gives its state,
    action and task, and iterating gives each grid slot's images ({camera: image}, in `layout`),
    counted into `histograms` on the way. `stopped` is checked at every slot."""

    def __init__(self, src: Source, s: Settings, stopped: Callable[[], bool], layout: str = "rgb24"):
        self.src, self.settings, self.stopped, self.layout = src, s, stopped, layout
        self.cameras = [name for name, _, _ in src.cameras]

    def __enter__(self) -> EpisodeFrames:
        self.raw = open_episode(self.src.path).__enter__()
        self.rows, self.repeated = grid_rows(self.raw.tick_index)
        self.frames = len(self.rows)
        self.state = joint_units.convert(self.raw.state[self.rows].astype(np.float32), self.src,
                                         self.settings.joint_units)
        self.action = actions(self.state, self.settings.action)
        self.task = self.settings.task or self.raw.task
        self.histograms = {cam: ImageHistogram(self.frames) for cam in self.cameras}
        self.undecodable = Undecodable(self.raw.frame_count)
        return self

    def __exit__(self, *exc) -> None:
        self.raw.__exit__(*exc)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        to_rgb = yuv420_to_rgb if self.layout == "yuv420p" else None
        for images in training_images(self.raw, self.src.cameras, self.rows, self.settings, self.undecodable,
                                      self.layout):
            if self.stopped():
                raise Stopped()
            for cam, image in images.items():
                self.histograms[cam].add(image, to_rgb)
            yield images

    def converted(self) -> Converted:
        return Converted(self.frames, self.repeated, self.undecodable.rows)


@dataclass
class Prepared:
    """An episode ready for LeRobot's v3.0 writer (v30.Writer.add)."""

    converted: Converted
    task: str
    state: np.ndarray  # (frames, D) float32
    action: np.ndarray  # (frames, D) float32
    videos: dict[str, Path]  # camera -> MP4 file, each in a folder of its own
    histograms: dict[str, ImageHistogram]  # camera -> pixel value counts for the image stats

    @property
    def frames(self) -> int:
        return self.converted.frames


def prepare_episode(src: Source, folder: Path, s: Settings, encoder_threads: int | None = None,
                    stopped: Callable[[], bool] = lambda: False) -> Prepared:
    """Decode, resize and encode one raw episode into `folder`. Runs in a worker process, which
    checks `stopped` between frames."""
    # the encoder's own layout where it has one (even sides): fewer values to resize, no conversion
    layout = "yuv420p" if s.width % 2 == 0 and s.height % 2 == 0 else "rgb24"
    with EpisodeFrames(src, s, stopped, layout) as ep:
        writers = {cam: VideoWriter(folder / cam / "video.mp4", src.fps, s.codec, encoder_threads)
                   for cam in ep.cameras}
        try:
            for images in ep:
                for cam, image in images.items():
                    writers[cam].add(image, layout)
            videos = {cam: w.close() for cam, w in writers.items()}
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        return Prepared(ep.converted(), ep.task, ep.state, ep.action, videos, ep.histograms)
