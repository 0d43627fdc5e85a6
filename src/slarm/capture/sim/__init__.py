"""Simulated hardware for `slarm-capture --sim` and the tests.

Each simulated arm or camera is its own process, as a real one is its own piece of hardware:
the arm speaks the Feetech protocol on a pseudo-terminal (so LeRobot's driver runs against
it unchanged), each camera serves MJPEG frames over a Unix socket. Killing a device process
is unplugging it; connecting again starts a fresh one, as plugging it back in would.
The gamepad is a virtual SDL controller inside the capture process (SDL's own virtual-joystick
API; see gamepad.py): the file `unplug-gamepad` in the sim folder unplugs it. The file
`dim-camera-<name>` there dims that camera's light: it then sends half its frame rate.
That folder goes when the session ends (a killed session's, at the next session's start);
SLARM_KEEP_SIM=1 keeps it, with the devices' logs and the arm's writes, for tests and debugging.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from slarm.capture.arm import ArmError, SO101Arm
from slarm.common import alive, stop_process
from slarm.config import CameraConfig, Config
from slarm.raw import Identity

from ..cameras import Camera, CameraError
from .camera_server import HEADER
from .gamepad import SimGamepad, VirtualPad


class DeviceProcess:
    """A simulated device's process: started on demand, restarted after it died."""

    def __init__(self, name: str, args: list[str], workdir: Path):
        self.name = name
        self.args = args
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def ensure_running(self, timeout_s: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *self.args, "--parent-pid", str(os.getpid())],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                start_new_session=True,  # hardware does not get the Ctrl-C typed at the terminal
            )
        line = _readline(self.proc, timeout_s)
        if not line.startswith(b"ready"):
            self.stop()
            raise RuntimeError(f"simulated {self.name} did not start; see {self.log}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        stop_process(self.proc)


def _readline(proc: subprocess.Popen, timeout_s: float) -> bytes:
    import select

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            return b""
    return b""


class SimRig:
    """The simulated arm and cameras of one session, in a temporary folder."""

    def __init__(self, cfg: Config):
        _remove_abandoned()
        self.dir = Path(tempfile.mkdtemp(prefix=SIM_PREFIX))
        (self.dir / OWNER).write_text(str(os.getpid()))
        self.keep = os.environ.get("SLARM_KEEP_SIM") == "1"
        if self.keep:
            (self.dir / KEEP).touch()
        self.robot_cfg = replace(cfg.robot, port=str(self.dir / "ttyARM"), calibration_dir=str(self.dir / "calibration"))
        self.arm_events = self.dir / "arm-events.txt"  # torque and goal position writes
        self.arm_process = DeviceProcess(
            "arm",
            ["slarm.capture.sim.arm_server", "--link", self.robot_cfg.port, "--calibration-dir",
             self.robot_cfg.calibration_dir, "--robot-id", cfg.robot.id, "--events", str(self.arm_events)],
            self.dir,
        )
        self.virtual_pad = VirtualPad(self.dir / "unplug-gamepad")
        self.camera_processes = {
            c.name: DeviceProcess(
                f"camera-{c.name}",
                ["slarm.capture.sim.camera_server", "--socket", str(self.dir / f"camera-{c.name}.sock"),
                 "--width", str(c.capture_width), "--height", str(c.capture_height), "--fps", str(cfg.camera_fps(c)),
                 "--dim-file", str(self.dir / f"dim-camera-{c.name}")],
                self.dir,
            )
            for c in cfg.cameras
        }

    def arm(self) -> SimArm:
        return SimArm(self.robot_cfg, self.arm_process)

    def gamepad(self) -> SimGamepad:
        return SimGamepad(self.robot_cfg, self.virtual_pad)

    def camera(self, cfg: CameraConfig, fps: int) -> SimCamera:
        return SimCamera(cfg, fps, self.camera_processes[cfg.name], self.dir / f"camera-{cfg.name}.sock")

    def describe(self) -> str:
        devices = [f"{p.name} pid {p.pid}" for p in [self.arm_process, *self.camera_processes.values()] if p.pid]
        if self.virtual_pad.plugged:
            devices.insert(0, "virtual gamepad")
        return f"simulated hardware in {self.dir} ({', '.join(devices)})"

    def close(self) -> None:
        for p in [self.arm_process, *self.camera_processes.values()]:
            p.stop()
        self.virtual_pad.unplug()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


SIM_PREFIX, OWNER, KEEP = "slarm-sim-", "owner-pid", "keep"


def _remove_abandoned() -> None:
    """The folders of sessions that were killed (SIGKILL: no clean-up ran): their owner is gone."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SIM_PREFIX}*"):
        try:
            owner = int((folder / OWNER).read_text())
        except (OSError, ValueError):  # not one of ours, or being made right now
            continue
        if not (folder / KEEP).exists() and not alive(owner):
            shutil.rmtree(folder, ignore_errors=True)


class SimArm(SO101Arm):
    """The real SO-101 code path, on the simulated bus (started or restarted on connect)."""

    def __init__(self, cfg, process: DeviceProcess):
        self.process = process
        process.ensure_running()  # writes the calibration file LeRobot loads below
        super().__init__(cfg)

    def connect(self) -> None:
        try:
            self.process.ensure_running()
        except RuntimeError as e:
            raise ArmError(str(e)) from e
        super().connect()


class SimCamera(Camera):
    """An MJPEG camera whose frames come from a simulated camera process."""

    source = "mjpeg-passthrough (simulated)"

    def __init__(self, cfg: CameraConfig, fps: int, process: DeviceProcess, sock_path: Path):
        super().__init__(cfg, fps)
        self.process = process
        self.sock_path = sock_path

    def _device_file(self) -> None:
        return None  # frames come over a socket; cfg.device may name a real camera of this machine

    def identify(self) -> Identity:
        """Simulated camera N is the one the config's device N names (as a real camera by number)."""
        return Identity("slarm simulated camera", "", f"simulated port {self.cfg.device}")

    def _open(self) -> None:
        try:
            self.process.ensure_running()
        except RuntimeError as e:
            raise CameraError(str(e)) from e
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(str(self.sock_path))
        except OSError as e:
            raise CameraError(f"cannot open simulated camera: {e}") from e
        self._sock.settimeout(2.0)

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise CameraError("disconnected")
            buf += chunk
        return bytes(buf)

    def _grab(self):
        seq, t, length = HEADER.unpack(self._recv(HEADER.size))
        return self._recv(length), t, seq

    def _close(self) -> None:
        self._sock.close()
