"""USB cameras: the JPEG bytes as sent, a camera gone silent or unplugged, another program on it,
camera numbers that change after a replug, modes it does not offer."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import (
    capture,
    episodes_dir,
)
from recording import plug
from slarm.capture.cameras import CameraError
from slarm.raw import open_episode

pytestmark = pytest.mark.e2e  # the commands as a user runs them (conftest.py)


class UsbCamera:
    """cv2.VideoCapture on Linux's V4L2 backend, opened on a USB camera that offers `modes`
    (pixel format, width, height). As OpenCV's V4L2 backend does: setting a pixel format the
    camera lacks fails and keeps the old one; a size snaps to the nearest one of the current
    format; with CONVERT_RGB off, MJPG frames come as the camera's bytes in a (1, N) array and
    YUYV frames as (H, W, 2) pixels. `unplugged` makes read() fail, as a pulled cable does.
    `silent` makes read() wait, as a camera that stops sending does (a stalled USB transfer):
    OpenCV's V4L2 read waits for a frame up to 10 s, here until `silent` is cleared, then gives
    nothing. release() during a read is counted: OpenCV would free the capture under that read.
    POS_MSEC is the V4L2 buffer timestamp of the last frame: taken when its data arrived, 30 ms
    before read() returns, on CLOCK_MONOTONIC as the UVC driver does (`clock` "realtime": as a
    driver set to another clock does)."""

    def __init__(self, modes, jpeg: bytes, clock: str = "monotonic"):
        self.modes, self.jpeg, self.unplugged, self.sent = modes, jpeg, False, 0
        self.format, self.width, self.height = modes[0]
        self.convert_rgb = True
        self.clock, self.arrived, self.returned = clock, [], []
        self.silent, self.reading, self.released, self.released_while_reading = False, 0, 0, 0
        self.streaming_elsewhere = False  # another program streams from it: its mode stays, no frames come

    def __call__(self, device, api=None):  # stands in for the cv2.VideoCapture class
        assert api == cv2.CAP_V4L2
        return self

    def isOpened(self):
        return True

    def set(self, prop, value):
        if self.streaming_elsewhere and prop in (cv2.CAP_PROP_FOURCC, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
            return False  # V4L2: EBUSY
        fourcc = int(value).to_bytes(4, "little").decode() if prop == cv2.CAP_PROP_FOURCC else self.format
        if prop == cv2.CAP_PROP_CONVERT_RGB:
            self.convert_rgb = bool(value)
        want = {cv2.CAP_PROP_FRAME_WIDTH: (value, self.height), cv2.CAP_PROP_FRAME_HEIGHT: (self.width, value)}
        w, h = want.get(prop, (self.width, self.height))
        sizes = [(mw, mh) for f, mw, mh in self.modes if f == fourcc]
        if not sizes:
            return False
        self.format = fourcc
        self.width, self.height = min(sizes, key=lambda s: abs(s[0] - w) + abs(s[1] - h))
        return True

    def get(self, prop):
        if prop == cv2.CAP_PROP_POS_MSEC:
            arrived = self.arrived[-1] if self.arrived else 0.0
            return 1000 * (arrived if self.clock == "monotonic" else arrived - time.monotonic() + time.time())
        return {cv2.CAP_PROP_FRAME_WIDTH: self.width, cv2.CAP_PROP_FRAME_HEIGHT: self.height,
                cv2.CAP_PROP_FOURCC: int.from_bytes(self.format.encode(), "little")}.get(prop, 0)

    def read(self):
        self.reading += 1
        try:
            return self._read()
        finally:
            self.reading -= 1

    def _read(self):
        if self.streaming_elsewhere:
            return False, None
        if self.silent:
            while self.silent:
                time.sleep(0.01)
            return False, None
        time.sleep(1 / 15 - 0.03)
        self.arrived.append(time.monotonic())
        time.sleep(0.03)  # the transfer, and the wait for read()
        self.returned.append(time.monotonic())
        if self.unplugged:
            return False, None
        self.sent += 1
        if self.format == "MJPG" and not self.convert_rgb:
            return True, np.frombuffer(self.jpeg, np.uint8).reshape(1, -1)
        return True, np.zeros((self.height, self.width, 2 if self.format == "YUYV" else 3), np.uint8)

    def release(self):
        self.released += 1
        self.released_while_reading += self.reading > 0


def usb_camera(monkeypatch, modes, clock: str = "monotonic", device_file: int | str = 0):
    from slarm.capture import cameras
    from slarm.config import CameraConfig

    ok, jpeg = cv2.imencode(".jpg", np.full((1080, 1920, 3), 90, np.uint8))
    device = UsbCamera(modes, jpeg.tobytes(), clock)
    monkeypatch.setattr(cv2, "VideoCapture", device)
    monkeypatch.setattr(cameras, "_is_linux", lambda: True)
    return device, cameras.make_camera(CameraConfig(name="wrist", device=device_file), fps=30)


def test_usb_camera_frames_are_the_jpeg_bytes_it_sent_until_it_is_unplugged(monkeypatch):
    device, camera = usb_camera(monkeypatch, [("YUYV", 640, 480), ("MJPG", 1280, 720), ("MJPG", 1920, 1080)])
    camera.connect()
    try:
        first = camera.latest()
        assert first.data == device.jpeg, "stored as the camera sent it: no decoding, no re-encoding"
        time.sleep(0.2)
        assert camera.latest().seq > first.seq, "each new frame gets the next number"
        device.unplugged = True
        time.sleep(0.2)
        with pytest.raises(CameraError, match=r"camera 'wrist' failed: no frame \(unplugged\?\)"):
            camera.latest()
    finally:
        camera.disconnect()


def test_a_camera_gone_silent_is_not_closed_under_its_read_and_comes_back(monkeypatch):
    """A camera that stops sending (no error, no frame) is dropped by the session as one that
    is unplugged: disconnect(), then connect() every second. Its reader is still inside OpenCV's
    read, which waits up to 10 s: the device is closed once that read returns, not under it (a
    freed capture under a running read crashes the recorder), and no second reader starts on
    the device before then."""
    device, camera = usb_camera(monkeypatch, [("MJPG", 1920, 1080)])
    readers = lambda: sum(t.name == "camera-wrist" for t in threading.enumerate())  # noqa: E731
    camera.connect()
    try:
        device.silent = True
        time.sleep(1.3)
        with pytest.raises(CameraError, match=r"camera 'wrist' sent no frame for 1 s"):
            camera.latest()
        started = time.monotonic()
        camera.disconnect()
        assert time.monotonic() - started < 3, "the session's loop is held at most 2 s"
        assert device.reading == 1 and device.released == 0, "the device stays open while its read waits"
        with pytest.raises(CameraError, match=r"camera 'wrist' \(0\): its last read is still waiting on the driver"):
            camera.connect()
        assert readers() == 1
        device.silent = False  # the read returns (the camera sends again, or OpenCV gives up)
        time.sleep(0.3)
        assert device.released == 1 and device.released_while_reading == 0 and readers() == 0
        camera.connect()
        first = camera.latest()
        time.sleep(0.3)
        assert camera.latest().seq > first.seq and readers() == 1, "frames flow again, from one reader"
    finally:
        device.silent = False
        camera.disconnect()
    assert device.released_while_reading == 0


HOLD_OPEN = """#!/usr/bin/env python3
import sys, time
f = open(sys.argv[1], "rb")
print("open", flush=True)
time.sleep(120)
"""


def test_a_camera_streaming_to_another_program_is_named(monkeypatch, tmp_path):
    """A USB camera streams to one program at a time: with a video call (or cheese, or another
    slarm-capture) on it, OpenCV keeps that program's mode and gets no frames. The message names
    that program, instead of sending the user to change capture_width; once it is closed, the
    camera opens."""
    node = tmp_path / "video0"  # the camera's device file
    node.write_bytes(b"")
    other = tmp_path / "cheese"
    other.write_text(HOLD_OPEN)
    holder = subprocess.Popen([sys.executable, str(other), str(node)], stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    device, camera = usb_camera(monkeypatch, [("YUYV", 640, 480), ("MJPG", 1920, 1080)], device_file=str(node))
    device.streaming_elsewhere = True
    try:
        with pytest.raises(CameraError) as e:
            camera.connect()
    finally:
        holder.kill()
        holder.wait()
    assert str(e.value) == (f"camera 'wrist' delivers 640x480, not the configured 1920x1080; {node} is open in another "
                            f"program: pid {holder.pid} (cheese {node}) (close it first)")
    device.streaming_elsewhere = False
    camera.connect()
    try:
        assert camera.latest().data == device.jpeg
    finally:
        camera.disconnect()


def test_a_camera_number_that_opens_another_camera_after_a_replug_is_not_reconnected(monkeypatch, tmp_path):
    """Camera numbers are handed out in the order cameras are found: after a replug (or a USB hub's
    power glitch) /dev/video0, the wrist camera's number, can be the laptop's webcam. The session
    reconnects a camera only to the camera it started with, and says where that one is now and
    which path always opens it; a camera with a serial number is still itself on another port."""
    from slarm.capture import device_identity

    monkeypatch.setattr(device_identity, "SYSFS", tmp_path / "sys" / "class")
    monkeypatch.setattr(device_identity, "DEV", tmp_path / "dev")
    c920, webcam = ("HD Pro Webcam C920", "A1B2C3", "1-2"), ("Integrated Webcam", "", "1-6")
    plug(tmp_path, {"video0": c920, "video2": webcam})
    video0, by_id = tmp_path / "dev" / "video0", tmp_path / "dev" / "v4l" / "by-id" / "usb-HD_Pro_Webcam_C920_A1B2C3-video-index0"
    device, camera = usb_camera(monkeypatch, [("MJPG", 1920, 1080)], device_file=str(video0))
    readers = lambda: sum(t.name == "camera-wrist" for t in threading.enumerate())  # noqa: E731
    camera.connect()
    try:
        assert camera.describe() == (
            "camera 'wrist': 1920x1080 @ 30 fps, mjpeg-passthrough, HD Pro Webcam C920 (USB port 1-2, serial A1B2C3)\n"
            f'  note: "device": "{by_id}" always opens this camera; a number such as {video0} can point to another '
            "camera after a reboot or replug")
        device.unplugged = True
        time.sleep(0.2)
        with pytest.raises(CameraError, match="unplugged"):
            camera.latest()
        camera.disconnect()
        plug(tmp_path, {"video0": webcam, "video2": c920})  # both came back, in the other order
        device.unplugged = False
        with pytest.raises(CameraError) as e:
            camera.connect()
        assert str(e.value) == (
            f"camera 'wrist' ({video0}) is now another camera: Integrated Webcam (USB port 1-6), not HD Pro Webcam "
            f"C920 (USB port 1-2, serial A1B2C3) as when recording started; that camera is now {tmp_path}/dev/video2 "
            f'("device": "{by_id}" always opens it). Camera numbers change when cameras are replugged: quit, give '
            "each camera a path that always opens it, and start again")
        assert readers() == 0, "the other camera is not opened"

        plug(tmp_path, {"video0": (*c920[:2], "1-3"), "video2": webcam})  # the C920, into another port
        camera.connect()
        assert camera.latest().data == device.jpeg and readers() == 1
    finally:
        camera.disconnect()
    cheap = device_identity.Identity("USB Camera", "", "USB port 1-2")
    assert not cheap.same_device(device_identity.Identity("USB Camera", "", "USB port 1-3")), (
        "two cameras of one model without serial numbers: only their ports tell them apart")


def test_resuming_with_another_camera_under_a_name_says_so(config):
    """Each episode stores which camera each name had. Resuming where a name now opens another
    camera (its number went to another camera after a reboot) says so; recording goes on (the
    person decides). The simulated camera N is the one the config's device N names."""
    args = ("--config", str(config), "--sim", "--episodes", "1", "--episode-time", "1", "--preview", "off")
    assert capture(*args).returncode == 0
    with open_episode(episodes_dir(config) / "episode_000000.h5") as ep:
        assert str(ep.cameras["wrist"].identity) == "slarm simulated camera (simulated port 0)"
    r = capture(*args)
    assert r.returncode == 0 and "next is episode 1" in r.stdout, r.stdout + r.stderr
    assert "another camera" not in r.stdout + r.stderr, "the same camera: nothing to say"
    cfg = json.loads(config.read_text())
    cfg["camera"]["device"] = 2
    config.write_text(json.dumps(cfg))
    r = capture(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("warning: camera 'wrist' is now slarm simulated camera (simulated port 2), not slarm simulated camera "
            "(simulated port 0) as in episode_000001.h5. Camera numbers change order after a reboot or replug: if "
            "the live view is not the one this name had, quit (ESC) and set this camera's \"device\"; if the camera "
            "was changed on purpose, go on (slarm-convert names the episodes recorded with each)") in r.stderr, r.stderr
    assert "saved episode 2" in r.stdout
    with open_episode(episodes_dir(config) / "episode_000002.h5") as ep:
        assert str(ep.cameras["wrist"].identity) == "slarm simulated camera (simulated port 2)"


@pytest.mark.parametrize("clock", ["monotonic", "realtime"])
def test_usb_camera_frame_time_is_when_its_data_arrived(monkeypatch, clock):
    """The driver's timestamp (V4L2, on our monotonic clock) dates the frame, not the end of
    read(); a driver on another clock cannot be compared, so read()'s return dates it then."""
    device, camera = usb_camera(monkeypatch, [("MJPG", 1920, 1080)], clock)
    camera.connect()
    try:
        time.sleep(0.2)
        frame = camera.latest()
        right, wrong = (device.arrived, device.returned) if clock == "monotonic" else (device.returned, device.arrived)
        assert min(abs(frame.time - t) for t in right) < 0.01, (frame.time, right[-3:])
        assert min(abs(frame.time - t) for t in wrong) > 0.02, (frame.time, wrong[-3:])
    finally:
        camera.disconnect()


@pytest.mark.parametrize("modes, expected", [
    ([("YUYV", 1920, 1080), ("MJPG", 1280, 720)], "camera 'wrist' delivers 1280x720, not the configured 1920x1080"),
    ([("YUYV", 640, 480), ("YUYV", 1920, 1080)], "camera 'wrist' sends YUYV at 1920x1080, not MJPG; choose a size it "
                                                 "lists under MJPG (v4l2-ctl -d 0 --list-formats-ext)"),
])
def test_usb_camera_without_mjpg_at_the_size_says_what_to_do(monkeypatch, modes, expected):
    device, camera = usb_camera(monkeypatch, modes)
    with pytest.raises(CameraError) as e:
        camera.connect()
    assert expected in str(e.value)
    assert device.sent == 0, "refused before recording anything"
