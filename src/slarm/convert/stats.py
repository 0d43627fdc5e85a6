"""Per-channel image stats of an episode, as LeRobot's writer computes them, from pixel counts.

LeRobot's writer computes an episode's image stats on a sample of its frames
(compute_stats.sample_indices: about 100 for a typical episode, each downsampled by
auto_downsample_height_width) with get_feature_stats: min, max, mean, std, and quantiles read
off a 5000-bin histogram between min and max. For 8-bit images all of these follow from how
often each of the 256 values occurs in each channel. So the worker that encodes an episode only
counts pixel values on those frames (ImageHistogram; no LeRobot import there), and image_stats
turns the counts into LeRobot's stats with LeRobot's own quantile code: the same bins and
quantiles as get_feature_stats on the same frames, without sorting millions of pixels in the
process that writes the dataset (tests/test_convert.py compares the two).
"""

from __future__ import annotations

import cv2
import numpy as np

from slarm import lerobot_private as private


def sample_indices(frames: int) -> list[int]:
    """lerobot.datasets.compute_stats.sample_indices, spelled out (a test compares the two)."""
    n = max(min(100, frames), min(int(frames**0.75), 10_000))
    return np.round(np.linspace(0, frames - 1, n)).astype(int).tolist()


def downsampled(image: np.ndarray) -> np.ndarray:
    """lerobot.datasets.compute_stats.auto_downsample_height_width, for an (H, W, C) image."""
    height, width = image.shape[:2]
    if max(width, height) < 300:
        return image
    step = int(width / 150) if width > height else int(height / 150)
    return image[::step, ::step]


class ImageHistogram:
    """How often each value 0..255 occurs in each channel of the frames of one camera that
    LeRobot's writer samples for the episode's image stats."""

    def __init__(self, frames: int):
        self.keep = set(sample_indices(frames))
        self.counts: np.ndarray | None = None  # (C, 256) int64
        self.frames = 0  # frames counted
        self.seen = 0

    def add(self, image: np.ndarray, rgb=None) -> None:
        """The next frame of the episode, (H, W, C) uint8, or another layout that rgb(image) turns
        into that (called for the sampled frames only)."""
        if self.seen in self.keep:
            image = np.ascontiguousarray(downsampled(image if rgb is None else rgb(image)))
            channels = image.shape[2]
            counts = [cv2.calcHist([image], [c], None, [256], [0, 256]).ravel() for c in range(channels)]
            if self.counts is None:
                self.counts = np.zeros((channels, 256), np.int64)
            self.counts += np.array(counts).astype(np.int64)  # float32 counts: exact below 2**24 pixels
            self.frames += 1
        self.seen += 1


def image_stats(histogram: ImageHistogram) -> dict[str, np.ndarray]:
    """What LeRobot's get_feature_stats(frames, axis=(0, 2, 3), keepdims=True) gives for the
    frames counted in `histogram`: min, max, mean, std and quantiles of shape (1, C, 1, 1) in
    0..255, and count (frames). Min, max and quantiles are LeRobot's to the bit; mean and std
    are exact (LeRobot's float32 running sums drift by up to ~1 % / ~15 % over 100 256x256
    frames)."""
    counts, frames = histogram.counts, histogram.frames
    stats = private.quantile_stats(counts)
    stats["count"] = np.array([frames])
    return {k: v if k == "count" else np.asarray(v).reshape(1, -1, 1, 1) for k, v in stats.items()}


def normalized(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stats as LeRobot stores them for an image feature: shape (3, 1, 1), in 0..1."""
    return {k: v if k == "count" else v.reshape(3, 1, 1) / 255.0 for k, v in stats.items()}


def check_finite(root) -> None:
    """Raise if any figure in the dataset's stats (meta/stats.json, and v2.1's per-episode
    meta/episodes_stats.jsonl) is NaN or infinite: a NaN mean or std normalizes a whole
    training run into NaN. The raw files are checked before conversion; this guards the result."""
    import json
    import math
    from pathlib import Path

    def bad(value, where: str):
        if isinstance(value, dict):
            return next((b for k, v in value.items() if (b := bad(v, f"{where} {k}"))), None)
        if isinstance(value, list):
            return next((b for v in value if (b := bad(v, where))), None)
        return where if isinstance(value, float) and not math.isfinite(value) else None

    root = Path(root)
    files = [root / "meta" / "stats.json", root / "meta" / "episodes_stats.jsonl"]
    for path in files:
        if not path.exists():
            continue
        lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
        for line in filter(str.strip, lines):
            if where := bad(json.loads(line), path.name):
                raise RuntimeError(f"{where} is not a finite number; the dataset is not written")
