"""Helpers that check what slarm-capture recorded and drive it as a user does."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import cv2
import numpy as np

from conftest import (
    device_pids,
    episodes_dir,
    spawn_capture,
)
from slarm.capture.cameras import STALE_AFTER_S
from slarm.capture.sim.camera_server import FRAMES, barcode_value, encoded_frames
from slarm.mjpeg import without_huffman_tables
from slarm.raw import FORMAT_VERSION, open_episode


def arm_writes(output: str, what: str = "torque") -> list[str]:
    """The simulated arm's writes of `what` (torque, goal): "torque {motor} {0|1}", "goal {motor} {ticks}"."""
    folder = re.search(r"simulated hardware in (\S+)", output).group(1)
    path = Path(folder) / "arm-events.txt"
    return [w for w in path.read_text().split("\n") if w.startswith(what)] if path.exists() else []


def check_episode(path: Path, fps: int = 30) -> None:
    """What a user relies on in a raw episode file (docs/raw-format.md)."""
    with open_episode(path) as ep:
        assert ep.attrs["format_version"] == FORMAT_VERSION
        assert ep.fps == fps
        assert ep.attrs["robot_type"] == "so101"
        assert ep.task == "pick up the red cube and place it in the box"
        assert len(ep.uuid) == 36
        n, ticks = ep.frame_count, ep.tick_index[-1] + 1  # frames stored; ticks from the first to the last
        duration = ep.timestamp[-1] - ep.timestamp[0]
        assert abs(ticks - (duration * fps + 1)) <= 1, "tick k is taken at k / fps"
        assert np.all(np.diff(ep.timestamp) > 0), "timestamps must increase"
        assert ep.attrs["missed_ticks"] == ticks - n, "every missed tick is counted"
        # Missed ticks are rare on a quiet machine; a busy CI machine can stall the sampler for a
        # few tenths of a second, which is counted and reported, not a failure to keep up.
        assert ticks - n <= max(1, ticks // 4), (n, ticks)
        assert ep.state.shape == (n, 6) and ep.state.dtype == np.float32
        assert ep.state_names == ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
        assert ep.state_attrs["units"] == "rad"
        lo, hi = np.array(ep.state_attrs["lower_limits"]), np.array(ep.state_attrs["upper_limits"])
        assert np.all(ep.state >= lo - 1e-6) and np.all(ep.state <= hi + 1e-6)
        assert np.all(np.abs(ep.state) <= np.pi + 1e-6), "radians, not degrees or ticks"
        assert np.ptp(ep.state, axis=0).max() > 0.01, "the arm moved"
        cam = ep.cameras["wrist"]
        assert (cam.width, cam.height, cam.encoding) == (1920, 1080, "jpeg")
        assert np.all(np.diff(cam.capture_time) >= 0)
        # Each frame is the camera's latest (not one waiting in a queue): under two frame periods old.
        # A busy CI machine can stall the camera for a moment too; never past the limit at which
        # it counts as gone.
        age = np.abs(cam.capture_time - ep.timestamp)
        assert np.median(age) < 2 / fps and np.all(age < STALE_AFTER_S), np.quantile(age, [0.5, 1])
        assert np.count_nonzero(age >= 0.2) <= max(1, n // 4), np.round(age[age >= 0.2], 2)
        rendered = encoded_frames(1920, 1080)
        for i in (0, n // 2, n - 1):
            jpg = ep.frame("wrist", i)
            sent = without_huffman_tables(rendered[cam.frame_seq[i] % FRAMES])  # as the simulated webcam sends it
            assert jpg.tobytes() == sent, "stored exactly as the camera sent it"
            img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)  # with no Huffman tables in it
            assert img.shape == (1080, 1920, 3)
            assert barcode_value(img[:, :, ::-1]) == cam.frame_seq[i] % FRAMES, "frame matches its frame number"
        assert_frames_read_from_the_file(ep)


def assert_frames_read_from_the_file(ep) -> None:
    """Every JPEG is read straight from the file's pages (no copy) and is exactly what HDF5 stores;
    a tick that got the frame of the tick before (format 2: no bytes of its own) reads that frame."""
    for name, cam in ep.cameras.items():
        stored = [i for i in range(ep.frame_count) if len(cam.frames[i])]
        assert stored[0] == 0 and all(cam.frame_seq[i] == cam.frame_seq[i - 1] for i in range(ep.frame_count)
                                      if i not in stored), "only a tick with the frame of the tick before has no bytes"
        shows = np.maximum.accumulate(np.isin(np.arange(ep.frame_count), stored) * np.arange(ep.frame_count))
        assert all(np.array_equal(ep.frame(name, i), cam.frames[shows[i]]) for i in range(ep.frame_count)), \
            "h5py reads the same"
        assert ep._spans[name] is not None, "JPEGs located in the file, not copied out through h5py"


def pexpect_eof():
    import pexpect

    return pexpect.EOF


def quit_with_esc(p, summary: str) -> None:
    """ESC ends the session: the summary line, then a clean exit."""
    p.send("\x1b")
    p.expect(summary)
    p.expect(pexpect_eof())
    p.close()
    assert p.exitstatus == 0


def unplug_during_second_episode(config, unplug, device: str = ".*", warning: str = "", check=check_episode):
    """Record episode 0, unplug a device while episode 1 records (`unplug(sim_line)`, where
    sim_line is what slarm-capture printed about the simulated hardware); the session must
    recover. `device` is how the messages name the device, `warning` how the warning starts."""
    p = spawn_capture("--config", str(config), "--sim", "--episodes", "2", "--episode-time", "1.5", "--preview", "off")
    p.expect(r"simulated hardware in .*\)")
    sim_line = p.after
    p.expect(r"saved episode 0: (\d+) frames")
    frames0 = int(p.match.group(1))
    p.expect("Recording episode 1")
    time.sleep(0.5)
    unplug(sim_line)
    p.expect(f"warning: {warning}")
    p.expect(rf"discarded episode 1 \({device} failed\)")
    p.expect(f"{device} is back; recording can go on")
    p.expect(r"saved episode 1: \d+ frames")
    p.expect("done: 2 episodes saved, 1 discarded")
    p.expect(pexpect_eof())
    p.close()
    assert p.exitstatus == 0
    files = sorted(episodes_dir(config).iterdir())
    assert [f.name for f in files] == ["episode_000000.h5", "episode_000001.h5"]
    for f in files:
        check(f)
    with open_episode(files[0]) as ep:
        assert ep.frame_count == frames0, "the earlier episode is intact"
    return sim_line


def kill(device: str):
    return lambda sim_line: os.kill(device_pids(sim_line)[device], signal.SIGKILL)


def plug(root: Path, devices: dict[str, tuple[str, str, str]]) -> None:
    """Linux's view of the USB devices plugged in, under `root`: {"video0": (model, serial, port)}
    (a camera; "ttyACM0": a serial adapter) as /sys/class/video4linux/video0 (or tty/ttyACM0): its
    name, its node index, its USB interface and the USB device above it with product and serial;
    and the device file /dev/video0 with udev's /dev/v4l (or /dev/serial) by-id and by-path links.
    Plugging again replaces what was there."""
    import shutil

    for part in ("sys", "dev"):
        shutil.rmtree(root / part, ignore_errors=True)
    for node, (model, serial, port) in devices.items():
        sys_class, links, end = ("video4linux", "v4l", "video-index0") if node.startswith("video") else ("tty", "serial", "if00")
        usb = root / "sys" / "devices" / "usb1" / port
        (usb / f"{port}:1.0").mkdir(parents=True)
        (usb / f"{port}:1.0" / "bInterfaceNumber").write_text("00\n")
        (usb / "product").write_text(model + "\n")
        if serial:
            (usb / "serial").write_text(serial + "\n")
        sysfs = root / "sys" / "class" / sys_class / node
        sysfs.mkdir(parents=True)
        (sysfs / "name").write_text(f"{model}: {model}\n")
        (sysfs / "index").write_text("0\n")
        (sysfs / "device").symlink_to(usb / f"{port}:1.0")
        (root / "dev" / links / "by-path").mkdir(parents=True, exist_ok=True)
        (root / "dev" / node).write_bytes(b"")
        (root / "dev" / links / "by-path" / f"pci-0000:00:14.0-usb-0:{port}:1.0-{end}").symlink_to(root / "dev" / node)
        if serial:
            (root / "dev" / links / "by-id").mkdir(exist_ok=True)
            (root / "dev" / links / "by-id" / f"usb-{model.replace(' ', '_')}_{serial}-{end}").symlink_to(root / "dev" / node)
