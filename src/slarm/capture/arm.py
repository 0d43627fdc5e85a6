"""The SO-101 follower arm as a state source: joint positions in radians, torque off.

LeRobot's own SOFollower and FeetechMotorsBus do the talking. We deliberately do not call
SOFollower.connect(): it may prompt for input (calibration) and its configure() step
re-enables torque, which on a hand-guided arm means it jumps to a stale goal position.
Instead: open the bus (with LeRobot's handshake), check the motors hold the calibration of
the file, switch torque off, and from then on only read.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from slarm import lerobot_private as private
from slarm.capture.device_identity import device_users
from slarm.common import first_line
from slarm.config import RobotConfig
from slarm.errors import Refused, SlarmError
from slarm.so101 import JOINT_NAMES, TICKS_PER_TURN

from . import device_identity as ids

READ_RETRIES = 2
ANSWER_WITHIN_S = 1.0  # connecting: how long the servos may take to answer LeRobot's handshake


class ArmError(SlarmError):
    """The arm cannot be read (unplugged, powered off, bus error)."""


class CalibrationError(Refused):
    """The calibration file is missing or does not match the motors. The message says what to run."""


class SO101Arm:
    """Reads the six joint positions of an SO-101 follower (gripper included) in radians."""

    robot_type = "so101"
    label = "arm"

    def __init__(self, cfg: RobotConfig):
        from lerobot.robots.so_follower import SOFollower, SOFollowerRobotConfig

        self.cfg = cfg
        robot_cfg = SOFollowerRobotConfig(
            port=cfg.port,
            id=cfg.id,
            calibration_dir=Path(cfg.calibration_dir) if cfg.calibration_dir else None,
        )
        self.robot = SOFollower(robot_cfg)
        self.bus = self.robot.bus
        self.state_names = list(JOINT_NAMES)
        self.units = "rad"
        cal = self.robot.calibration  # loaded by LeRobot from the calibration file, {} when there is none
        if cal:
            self._mid = np.array([(cal[n].range_min + cal[n].range_max) / 2 for n in JOINT_NAMES])
            sign = np.array([-1.0 if cal[n].drive_mode else 1.0 for n in JOINT_NAMES])
            # LeRobot's DEGREES normalisation, in radians: (ticks - mid) * 2pi / (resolution - 1)
            self._scale = sign * 2 * math.pi / (TICKS_PER_TURN - 1)

    @property
    def calibration_file(self) -> Path:
        return self.robot.calibration_fpath

    def calibrate_command(self) -> str:
        cmd = f"lerobot-calibrate --robot.type=so101_follower --robot.port={self.cfg.port} --robot.id={self.cfg.id}"
        if self.cfg.calibration_dir:
            cmd += f" --robot.calibration_dir={self.cfg.calibration_dir}"
        return cmd

    def connect(self) -> None:
        if not self.robot.calibration:
            raise CalibrationError(
                f"no calibration for robot id '{self.cfg.id}' (looked for {self.calibration_file}).\n"
                f"Calibrate the arm once, then start again:\n  {self.calibrate_command()}"
            )
        others = device_users(self.cfg.port)
        if others:
            raise ArmError(f"the arm's port {self.cfg.port} is open in another program: {'; '.join(others)}\n"
                           "Two programs on one servo bus take each other's replies: stop that one first.")
        self._open_bus()
        try:
            calibrated = self.bus.is_calibrated
        except Exception as e:
            self._close_port()
            raise ArmError(f"cannot read the arm's calibration on {self.cfg.port}: {first_line(e)}") from e
        if not calibrated:
            self.disconnect()
            found = ids.identify(self.cfg.port, ids.SERIAL_PORTS)
            raise CalibrationError(
                f"the motors on {self.cfg.port}{f' ({found})' if found else ''} do not hold the calibration in "
                f"{self.calibration_file} (another arm, or it was recalibrated).\n"
                "If the leader arm is plugged in too, this may be its port: serial ports are numbered in the order "
                "they are found, and can swap after a reboot or replug. Then do not calibrate (that would write the "
                "leader's calibration as the follower's): set \"port\" to the follower's (find it with "
                "lerobot-find-port; a /dev/serial/by-id/... path does not change).\n"
                f"Otherwise calibrate again:\n  {self.calibrate_command()}"
            )
        try:
            self.bus.disable_torque(num_retry=3)
        except Exception as e:
            self.disconnect()
            raise ArmError(f"cannot switch the arm's torque off: {first_line(e)}") from e

    def _open_bus(self) -> None:
        """Open the port and pass LeRobot's handshake (every motor answers a ping, one firmware),
        trying again for up to ANSWER_WITHIN_S: servos powered a moment ago, or a reply lost on the
        bus, miss a handshake that the next one passes, and a port appears a moment after its USB
        adapter is plugged in."""
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while True:
            private.release_port(self.bus)
            try:
                self.bus.connect()
                return
            except Exception as e:  # LeRobot raises ConnectionError/RuntimeError with its own text
                self._close_port()
                if time.monotonic() >= deadline:
                    raise ArmError(f"cannot connect to the arm on {self.cfg.port}: {first_line(e)}\n"
                                   "Is it plugged in and powered? Find its port with: lerobot-find-port (on Linux "
                                   "the user needs access to it: group 'dialout')") from e
            time.sleep(0.1)

    def read(self) -> np.ndarray:
        """Joint positions in radians, zero at the middle of each calibrated range (LeRobot's convention)."""
        try:
            raw = self.bus.sync_read("Present_Position", normalize=False, num_retry=READ_RETRIES)
        except Exception as e:
            raise ArmError(f"arm read failed: {first_line(e)}") from e
        return self.radians(np.fromiter((raw[n] for n in JOINT_NAMES), dtype=np.float64, count=len(JOINT_NAMES)))

    def radians(self, ticks: np.ndarray) -> np.ndarray:
        """Motor positions (raw ticks, JOINT_NAMES order) -> the state: radians from each range's middle."""
        return ((np.asarray(ticks, dtype=np.float64) - self._mid) * self._scale).astype(np.float32)

    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper joint limits in radians, from the calibrated ranges."""
        cal = self.robot.calibration
        lo = np.array([cal[n].range_min for n in JOINT_NAMES], dtype=np.float64)
        hi = np.array([cal[n].range_max for n in JOINT_NAMES], dtype=np.float64)
        a, b = (lo - self._mid) * self._scale, (hi - self._mid) * self._scale
        return np.minimum(a, b).astype(np.float32), np.maximum(a, b).astype(np.float32)

    def calibration_snapshot(self) -> dict:
        return {
            n: {"id": c.id, "drive_mode": c.drive_mode, "homing_offset": c.homing_offset,
                "range_min": c.range_min, "range_max": c.range_max}
            for n, c in self.robot.calibration.items()
        }

    def describe(self) -> str:
        """'arm connected on /dev/ttyACM0 (its USB adapter), torque off: ...', and how to keep the
        config on this arm where it gives the port by number."""
        found = ids.identify(self.cfg.port, ids.SERIAL_PORTS)
        text = f"arm connected on {self.cfg.port}{f' ({found})' if found else ''}, torque off: move it by hand"
        stable = ids.stable_path(self.cfg.port, found, ids.SERIAL_PORTS) if found and ids.by_number(self.cfg.port) else None
        return text + (f'\n  note: "port": "{stable}" always opens this arm; a number such as {self.cfg.port} can '
                       "point to another arm (the leader's) after a reboot or replug" if stable else "")

    def disconnect(self) -> None:
        """Torque off (again) and close the port. Safe to call twice or on a dead port."""
        if not self.bus.is_connected:
            return
        try:
            self.bus.disconnect(disable_torque=True)
        except Exception:
            self._close_port()

    def _close_port(self) -> None:
        try:
            self.bus.port_handler.closePort()
        except Exception:
            pass
