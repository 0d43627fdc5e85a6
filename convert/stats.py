"""Per-channel image stats of an episode, as LeRobot defines them, without touching every pixel.

LeRobot's writer computes an episode's image stats on a sample of its frames
(compute_stats.sample_indices: up to ~100 for a typical episode); we take the same frames,
each subsampled to about 128 pixels a side, and LeRobot's get_feature_stats.
"""

from __future__ import annotations

import numpy as np
from lerobot.datasets.compute_stats import auto_downsample_height_width, get_feature_stats, sample_indices

STATS_SIZE = 128


class ImageStats:
    def __init__(self, frames: int):
        self.keep = set(sample_indices(frames))
        self.samples: list[np.ndarray] = []
        self.seen = 0

    def add(self, image: np.ndarray) -> None:
        """The next frame of the episode, (H, W, 3) uint8."""
        if self.seen in self.keep:
            self.samples.append(auto_downsample_height_width(image.transpose(2, 0, 1), STATS_SIZE, 0))
        self.seen += 1

    def result(self) -> dict[str, np.ndarray] | None:
        """min, max, mean, std, quantiles with shape (1, 3, 1, 1) in 0..255, count; None without frames."""
        if not self.samples:
            return None
        return get_feature_stats(np.stack(self.samples), axis=(0, 2, 3), keepdims=True)

    def normalized(self) -> dict[str, np.ndarray] | None:
        """The stats as LeRobot stores them for an image feature: shape (3, 1, 1), in 0..1."""
        stats = self.result()
        if stats is None:
            return None
        return {k: v if k == "count" else v.reshape(3, 1, 1) / 255.0 for k, v in stats.items()}
