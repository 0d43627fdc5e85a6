"""Per-channel image stats of an episode, as LeRobot defines them, without touching every pixel.

LeRobot's writer computes an episode's image stats on a sample of its frames
(compute_stats.sample_indices: about 100 for a typical episode), each subsampled by a stride
(auto_downsample_height_width). The worker that encodes an episode keeps the same frames,
subsampled to about 64 pixels a side (ImageSamples; no LeRobot import there), and LeRobot's
get_feature_stats computes the stats from them (image_stats).
"""

from __future__ import annotations

import numpy as np

STATS_SIZE = 64


def sample_indices(frames: int) -> list[int]:
    """lerobot.datasets.compute_stats.sample_indices, spelled out (a test compares the two)."""
    n = max(min(100, frames), min(int(frames**0.75), 10_000))
    return np.round(np.linspace(0, frames - 1, n)).astype(int).tolist()


class ImageSamples:
    """The frames of one camera that the episode's image stats are computed on."""

    def __init__(self, frames: int):
        self.keep = set(sample_indices(frames))
        self.samples: list[np.ndarray] = []
        self.seen = 0

    def add(self, image: np.ndarray) -> None:
        """The next frame of the episode, (H, W, 3) uint8."""
        if self.seen in self.keep:
            step = max(1, max(image.shape[:2]) // STATS_SIZE)
            self.samples.append(np.ascontiguousarray(image[::step, ::step].transpose(2, 0, 1)))
        self.seen += 1

    def array(self) -> np.ndarray:
        """(N, 3, h, w) uint8."""
        return np.stack(self.samples)


def image_stats(samples: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's min, max, mean, std, quantiles of (N, 3, h, w) samples, shape (1, 3, 1, 1) in 0..255, and count."""
    from lerobot.datasets.compute_stats import get_feature_stats

    return get_feature_stats(samples, axis=(0, 2, 3), keepdims=True)


def normalized(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stats as LeRobot stores them for an image feature: shape (3, 1, 1), in 0..1."""
    return {k: v if k == "count" else v.reshape(3, 1, 1) / 255.0 for k, v in stats.items()}
