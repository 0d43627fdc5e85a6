"""What the recorder needs of the device whose readings become the state: the SO-101 arm
(arm.SO101Arm, joint radians) or a gamepad (gamepad.Gamepad, axes and buttons). A new kind of
robot is a class with these members; the session, the sampler and the episode file use
nothing else of it."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class StateSource(Protocol):
    robot_type: str  # stored in the raw file: "so101", "gamepad"
    label: str  # how messages name it: "arm", "gamepad"
    units: str  # of the state values: "rad", "normalized"
    state_names: list[str]  # one per state value, in order

    def connect(self) -> None:
        """Open the device (again, after a fault); raises the device's SlarmError when it cannot."""

    def read(self) -> np.ndarray:
        """The state now: float values, state_names' order. Called on the sampling thread: no
        blocking beyond the device's own answer."""

    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        """The lowest and highest value each state value can take (stored with the state)."""

    def calibration_snapshot(self) -> dict:
        """What the values depend on (the arm's calibration), stored in each raw file."""

    def describe(self) -> str:
        """One line for the terminal once connected."""

    def disconnect(self) -> None:
        """Close the device (the arm: torque off, port closed); safe to call when not connected."""
