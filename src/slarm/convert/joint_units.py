"""The units of the SO-101's state and action in the dataset: radians, as recorded, or LeRobot's.

slarm-capture records joint positions in radians, zero at the middle of each calibrated range
(docs/raw-format.md). LeRobot's so101_follower (SOFollower, use_degrees=True, its default)
reads them, and takes its actions, otherwise: the five body joints in degrees on the same zero
(MotorNormMode.DEGREES, which ignores the calibration's drive_mode), the gripper from 0
(range_min) to 100 (range_max), held to that range (MotorNormMode.RANGE_0_100), under the names
"shoulder_pan.pos", ... A policy trained in radians and run through LeRobot's robot class
(lerobot-rollout) would be given degrees and send radians as degrees: "lerobot" writes the
dataset as lerobot-record would have, from each episode's own calibration.
"""

from __future__ import annotations

import math

import numpy as np

from slarm.so101 import JOINT_NAMES, TICKS_PER_TURN

from .sources import Source

UNITS = ("rad", "lerobot")
GRIPPER = "gripper"  # the one joint LeRobot reads in RANGE_0_100


def names(src: Source, units: str) -> list[str]:
    """The state's (and action's) names in the dataset."""
    return [f"{n}.pos" for n in src.state_names] if units == "lerobot" else list(src.state_names)


def why_not(src: Source, units: str) -> str | None:
    """Why the episode's state cannot be given in `units` (None: it can)."""
    if units == "rad":
        return None
    if src.robot_type != "so101" or tuple(src.state_names) != JOINT_NAMES:
        return (f"{src.path} holds no SO-101 joints (state: {', '.join(src.state_names)}); --joint-units lerobot "
                "is for SO-101 episodes, leave it out for this robot")
    missing = [n for n in JOINT_NAMES if not {"drive_mode", "range_min", "range_max"} <= set(src.calibration.get(n, {}))]
    if missing:
        return (f"{src.path} does not hold the arm's calibration of {', '.join(missing)}, which LeRobot's units are "
                "taken from; convert it without --joint-units lerobot")
    if empty := [n for n in JOINT_NAMES if src.calibration[n]["range_min"] == src.calibration[n]["range_max"]]:
        return (f"{src.path} was recorded with a calibration that gives {', '.join(empty)} no range (range_min = "
                "range_max), which LeRobot's units are taken from; convert it without --joint-units lerobot")
    return None


def convert(state: np.ndarray, src: Source, units: str) -> np.ndarray:
    """(T, 6) radians of the SO-101 -> `units`, float32 (why_not(src, units) must be None)."""
    if units == "rad":
        return state
    out = np.empty(state.shape, dtype=np.float64)
    for j, name in enumerate(JOINT_NAMES):
        cal = src.calibration[name]
        sign = -1.0 if cal["drive_mode"] else 1.0  # slarm-capture's radians turn with the drive mode
        unturned = state[:, j].astype(np.float64) * sign
        if name != GRIPPER:
            out[:, j] = np.degrees(unturned)
            continue
        lo, hi = cal["range_min"], cal["range_max"]
        ticks = np.clip((lo + hi) / 2 + unturned * (TICKS_PER_TURN - 1) / (2 * math.pi), lo, hi)
        percent = (ticks - lo) / (hi - lo) * 100
        out[:, j] = 100 - percent if cal["drive_mode"] else percent
    return out.astype(np.float32)
