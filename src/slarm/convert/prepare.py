"""One raw episode made ready for LeRobot's writer: its frames placed on the time grid, state
and action, and for each camera the episode's video and the frames its image stats come from.

This is the heavy part of a conversion (JPEG decoding, resizing, video encoding); it runs in
worker processes, one episode each, and imports nothing of LeRobot (see encoding.py).
"""

from __future__ import annotations

from collections.abc import Callable
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


@dataclass
class Prepared:
    frames: int
    repeated: int  # grid slots filled by repeating a neighbouring tick
    task: str
    state: np.ndarray  # (frames, D) float32
    action: np.ndarray  # (frames, D) float32
    undecodable: dict[str, list[int]]  # camera -> raw frames that could not be decoded, each replaced
    videos: dict[str, Path]  # camera -> MP4 file, each in a folder of its own
    histograms: dict[str, ImageHistogram]  # camera -> pixel value counts for the image stats


def prepare_episode(src: Source, folder: Path, s: Settings, encoder_threads: int | None = None,
                    stopped: Callable[[], bool] = lambda: False) -> Prepared:
    """Decode, resize and encode one raw episode into `folder`. Runs in a worker process, which
    checks `stopped` between frames."""
    cams = [name for name, _, _ in src.cameras]
    # the encoder's own layout where it has one (even sides): fewer values to resize, no conversion
    yuv = s.width % 2 == 0 and s.height % 2 == 0
    layout, rgb = ("yuv420p", yuv420_to_rgb) if yuv else ("rgb24", None)
    with open_episode(src.path) as ep:
        rows, repeated = grid_rows(ep.tick_index)
        state = joint_units.convert(ep.state[rows].astype(np.float32), src, s.joint_units)
        writers = {cam: VideoWriter(folder / cam / "video.mp4", ep.fps, s.codec, encoder_threads) for cam in cams}
        histograms = {cam: ImageHistogram(len(rows)) for cam in cams}
        undecodable = Undecodable(ep.frame_count)
        try:
            for images in training_images(ep, src.cameras, rows, s, undecodable, layout):
                if stopped():
                    raise Stopped()
                for cam, image in images.items():
                    writers[cam].add(image, layout)
                    histograms[cam].add(image, rgb)
            videos = {cam: w.close() for cam, w in writers.items()}
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        return Prepared(frames=len(rows), repeated=repeated, task=s.task or ep.task, state=state,
                        action=actions(state, s.action), undecodable=undecodable.rows, videos=videos,
                        histograms=histograms)
