"""The dataset's features: what LeRobot's info.json lists, for both formats.

State and action carry the joint (or axis) names; each camera is a video (v3.0) or an image
embedded as JPEG in the parquet files (v2.1, LeRobot 0.3.3's spelling, with its index columns).
"""

from __future__ import annotations

from . import joint_units
from .settings import Settings
from .sources import Source

V21_INDEX_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


def features(src: Source, s: Settings) -> dict:
    """The features of a dataset of episodes like `src`, converted with `s`."""
    names = joint_units.names(src, s.joint_units)
    v21 = s.format == "v2.1"
    shape = list if v21 else tuple  # as each LeRobot writes them
    feats = {
        "observation.state": {"dtype": "float32", "shape": shape([len(names)]), "names": names},
        "action": {"dtype": "float32", "shape": shape([len(names)]), "names": names},
    }
    for cam, _, _ in src.cameras:
        feats[f"observation.images.{cam}"] = {
            "dtype": "image" if v21 else "video", "shape": shape([s.height, s.width, 3]),
            "names": ["height", "width", "channel" if v21 else "channels"],
        }
    return {**feats, **V21_INDEX_FEATURES} if v21 else feats
