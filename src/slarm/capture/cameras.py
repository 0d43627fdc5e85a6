"""Cameras: each one keeps its newest frame, as the camera delivered it, ready for the next tick.

A reader thread per camera waits on the device and replaces the newest frame; the sampling
thread only takes that reference (`latest()`), so a tick never waits for a camera.

- MjpegCamera: a USB camera asked for MJPG; the JPEG bytes it sends are stored unchanged.
- OpenCVCamera: LeRobot's OpenCVCamera, for platforms that only hand over decoded frames;
  each frame is JPEG-encoded once (or kept as RGB pixels) on the camera's own thread.
- SimCamera (sim/camera_server.py): the same reader, fed by a simulated camera process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from slarm.capture.device_identity import device_users
from slarm.config import CameraConfig
from slarm.errors import SlarmError

from . import device_identity as ids

STALE_AFTER_S = 1.0  # no new frame for this long: the camera is treated as gone
MAX_DRIVER_DELAY_S = 0.5  # a driver timestamp older than this at read() is not on our clock


class CameraError(SlarmError):
    """A camera cannot deliver frames (unplugged, busy, wrong mode); `camera`: its name, where
    the session must know which camera failed."""

    def __init__(self, message: str, camera: str | None = None):
        super().__init__(message)
        self.camera = camera


@dataclass(frozen=True)
class Frame:
    data: bytes | np.ndarray  # JPEG bytes as delivered, or an RGB (H, W, 3) uint8 array
    seq: int  # the camera's frame number: equal numbers in two ticks mean the same frame twice
    time: float  # time.monotonic() when the frame was captured


class Camera:
    """A camera with a reader thread. Subclasses implement _open, _grab and _close."""

    encoding = "jpeg"  # "jpeg" (bytes) or "rgb" (pixel arrays)
    source = ""  # how frames reach the file, stored in the raw file

    def __init__(self, cfg: CameraConfig, fps: int):
        self.cfg = cfg
        self.name = cfg.name
        self.label = f"camera '{cfg.name}'"
        self.fps = fps
        self.width, self.height = cfg.capture_width, cfg.capture_height
        self._frame: Frame | None = None
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = threading.Lock()  # who closes the device: disconnect(), or a reader it left behind
        self._reader_gone = True
        self._reader_closes = False
        self.identity: ids.Identity | None = None  # the camera this name got when the session started

    def connect(self, timeout_s: float = 5.0) -> None:
        """Open the device, start the reader, wait for the first frame. A reconnect opens only
        the camera the session started with: camera numbers can change when cameras are replugged."""
        if self._thread is not None and self._thread.is_alive():  # left behind by disconnect(), see there
            raise CameraError(f"camera '{self.name}' ({self.cfg.device}): its last read is still waiting on the driver",
                              self.name)
        found = self.identify()
        if self.identity is not None and found is not None and not found.same_device(self.identity):
            raise CameraError(
                f"camera '{self.name}' ({self.cfg.device}) is now another camera: {found}, not {self.identity} as "
                f"when recording started{ids.where_now(self.identity)}. Camera numbers change when cameras are "
                "replugged: quit, give each camera a path that always opens it, and start again")
        self._frame, self._error = None, None
        self._stop.clear()
        self._open()
        self._reader_gone, self._reader_closes = False, False
        self._thread = threading.Thread(target=self._read_loop, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while self._frame is None and self._error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._frame is None:
            self.disconnect()
            raise CameraError(f"camera '{self.name}' ({self.cfg.device}): {self._error or 'no frame within 5 s'}"
                              + self._in_use())
        self.identity = self.identity or found

    def identify(self) -> ids.Identity | None:
        """Which camera the configured device is now (None: not known on this platform)."""
        path = self._device_file()
        return ids.identify(path) if path else None

    def describe(self) -> str:
        """'camera 'wrist': 1920x1080 @ 30 fps, mjpeg-passthrough, HD Webcam (USB port 3-2)', and how to
        keep the name on this camera where the config gives a number."""
        text = f"camera '{self.name}': {self.width}x{self.height} @ {self.fps} fps, {self.source}"
        if self.identity is None:
            return text
        path = self._device_file()
        stable = ids.stable_path(path, self.identity) if path and ids.by_number(self.cfg.device) else None
        return f"{text}, {self.identity}" + (
            f'\n  note: "device": "{stable}" always opens this camera; a number such as {self.cfg.device} can '
            "point to another camera after a reboot or replug" if stable else "")

    def latest(self) -> Frame:
        """The newest frame. Raises CameraError if the camera failed or went silent."""
        frame, error = self._frame, self._error
        if error is not None:
            raise CameraError(f"camera '{self.name}' failed: {error}", self.name)
        if frame is None or time.monotonic() - frame.time > STALE_AFTER_S:
            raise CameraError(f"camera '{self.name}' sent no frame for {STALE_AFTER_S:.0f} s", self.name)
        return frame

    def disconnect(self) -> None:
        """Stop the reader and close the device. A reader still waiting on a silent camera after
        2 s is left to close the device itself once its read returns (OpenCV's V4L2 read gives up
        after 10 s): closing a VideoCapture under a read in progress frees it under that read.
        Until then connect() refuses, so that two readers never share a device."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        with self._closing:
            if not self._reader_gone and self._thread is not threading.current_thread():
                self._reader_closes = True
                return
        self._thread = None
        self._close_quietly()

    def _read_loop(self) -> None:
        seq = 0
        try:
            while not self._stop.is_set():
                data, t, cam_seq = self._grab()
                self._frame = Frame(data, seq if cam_seq is None else cam_seq, t)
                seq += 1
        except Exception as e:  # reported to the sampling thread through latest()
            if not self._stop.is_set():
                self._error = str(e) or type(e).__name__
        finally:
            with self._closing:
                self._reader_gone = True
                if self._reader_closes:
                    self._close_quietly()

    def _close_quietly(self) -> None:
        try:
            self._close()
        except Exception:
            pass

    def _in_use(self) -> str:
        """'; /dev/video0 is open in another program: pid 77 (cheese) ...' where it is, else ''. A
        camera streams to one program at a time: the other one's mode, or no frames, is what we get."""
        path = self._device_file()
        others = device_users(path) if path else []
        return f"; {path} is open in another program: {'; '.join(others)} (close it first)" if others else ""

    # --- per backend -------------------------------------------------------------------
    def _device_file(self) -> str | None:
        """The camera's device file (None: it has none, as the simulated camera)."""
        return video_device(self.cfg.device)

    def _open(self) -> None:
        raise NotImplementedError

    def _grab(self) -> tuple[bytes | np.ndarray, float, int | None]:
        """Block until the next frame; return (data, capture time, camera frame number or None)."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


class MjpegCamera(Camera):
    """A USB (UVC) camera in MJPG mode; the frame is the JPEG the camera sent (no decoding)."""

    source = "mjpeg-passthrough"

    def _open(self) -> None:
        import cv2

        dev = self.cfg.device
        self._cap = cv2.VideoCapture(dev, cv2.CAP_V4L2) if _is_linux() else cv2.VideoCapture(dev)
        if not self._cap.isOpened():
            raise CameraError(
                f"camera '{self.name}': cannot open device {dev!r} (unplugged, or used by another program?)"
                f"{self._in_use()}. List cameras with: lerobot-find-cameras opencv"
            )
        self._cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)  # hand over the compressed bytes
        # The driver's buffers stay at OpenCV's 4, not 1: read() gives a buffer back to the driver
        # before copying the frame out of it (OpenCV 4.x, cap_v4l.cpp retrieveFrame), so with one
        # buffer the next frame can be written into it during that copy (a frame mixing two); and
        # a reader held up for a moment loses the frames that arrive meanwhile. With the reader
        # thread always waiting on the driver, more buffers add no latency.
        self._pos_msec = cv2.CAP_PROP_POS_MSEC  # read per frame, on the camera's thread
        w, h = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if (w, h) != (self.width, self.height):
            self._cap.release()
            raise CameraError(
                f"camera '{self.name}' delivers {w}x{h}, not the configured {self.width}x{self.height}"
                + (self._in_use() or "; set capture_width/capture_height to a mode the camera supports "
                   "(v4l2-ctl --list-formats-ext)")
            )
        fourcc = _fourcc_text(self._cap.get(cv2.CAP_PROP_FOURCC))  # V4L2: the pixel format the camera now sends
        if _is_linux() and fourcc not in ("", "MJPG", "JPEG"):  # unknown (""): _grab checks the bytes
            self._cap.release()
            raise CameraError(
                f"camera '{self.name}' sends {fourcc} at {w}x{h}, not MJPG"
                + (self._in_use() or f"; choose a size it lists under MJPG (v4l2-ctl -d {dev} --list-formats-ext), "
                   "or set \"backend\": \"opencv\" for this camera (frames are then JPEG-encoded once, at the "
                   "rate the camera manages)")
            )

    def _grab(self):
        ok, buf = self._cap.read()
        now = time.monotonic()
        if not ok or buf is None:
            raise CameraError("no frame (unplugged?)")
        if buf.ndim != 2 or buf.shape[0] != 1 or buf[0, :2].tobytes() != b"\xff\xd8":
            raise CameraError(
                "this platform does not hand over the camera's JPEG bytes; "
                'set "backend": "opencv" for this camera (frames are then encoded once)'
            )
        return buf.tobytes(), driver_time(self._cap.get(self._pos_msec), now), None

    def _close(self) -> None:
        self._cap.release()


class OpenCVCamera(Camera):
    """LeRobot's OpenCVCamera (decoded RGB frames); JPEG-encoded once here, or kept as pixels."""

    source = "lerobot-opencv"

    def __init__(self, cfg: CameraConfig, fps: int):
        super().__init__(cfg, fps)
        self.encoding = cfg.storage

    def _open(self) -> None:
        from lerobot.cameras.opencv import OpenCVCamera as LeRobotOpenCVCamera
        from lerobot.cameras.opencv import OpenCVCameraConfig

        dev = self.cfg.device
        self._cam = LeRobotOpenCVCamera(
            OpenCVCameraConfig(index_or_path=dev, fps=self.fps, width=self.width, height=self.height)
        )
        try:
            self._cam.connect()
        except Exception as e:
            raise CameraError(f"cannot open device {dev!r}: {e}{self._in_use()}") from e

    def _grab(self):
        import cv2

        rgb = self._cam.read()  # blocks for the next frame
        t = time.monotonic()
        if self.encoding == "rgb":
            return rgb, t, None
        ok, jpg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if not ok:
            raise CameraError("JPEG encoding failed")
        return jpg.tobytes(), t, None

    def _close(self) -> None:
        if self._cam.is_connected:
            self._cam.disconnect()


def driver_time(pos_msec: float, now: float) -> float:
    """When the frame arrived, by the driver's clock where it is ours. On Linux, OpenCV's
    POS_MSEC is the V4L2 buffer timestamp, which the UVC driver takes on CLOCK_MONOTONIC
    (time.monotonic()) as the frame's data arrives: earlier than read() returns by the
    transfer and the wait. Another clock, or none (0), is far from `now`: then `now`."""
    t = pos_msec / 1000.0
    return t if 0.0 <= now - t < MAX_DRIVER_DELAY_S else now


def video_device(device: int | str) -> str | None:
    """The device file of a camera given as an index (Linux: /dev/videoN) or as a path."""
    if isinstance(device, int):
        return f"/dev/video{device}" if _is_linux() else None
    return str(device)


def _fourcc_text(value: float) -> str:
    """OpenCV's FOURCC property as text ("MJPG", "YUYV"); "" when it is not a pixel format code."""
    code = int(value)
    text = code.to_bytes(4, "little").decode("ascii", errors="replace") if 0 < code < 2**32 else ""
    return text if text.isprintable() and text.strip() else ""


def _is_linux() -> bool:
    import sys

    return sys.platform.startswith("linux")


def make_camera(cfg: CameraConfig, fps: int) -> Camera:
    return MjpegCamera(cfg, fps) if cfg.backend == "mjpeg" else OpenCVCamera(cfg, fps)
