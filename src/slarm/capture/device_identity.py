"""Which physical device a device file is, so that a name stays on its device.

Device numbers (/dev/video0, /dev/video2; /dev/ttyACM0, /dev/ttyACM1) are handed out in the
order the devices are found: after a reboot, a replug or a USB hub's power glitch the wrist
camera can come back as the number the top camera had, and the follower arm's port as the
number the leader arm's had. Linux's sysfs says which device a number is (its model, serial
number and USB port), and udev makes /dev/v4l/by-id, /dev/serial/by-id (and by-path) links
that always open the same device. Elsewhere (macOS, the simulated devices) a device has no
identity here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from slarm.raw import Identity

SYSFS = Path("/sys/class")
DEV = Path("/dev")
CAMERAS = ("video4linux", "v4l")  # (sysfs class, folder of udev's links under /dev)
SERIAL_PORTS = ("tty", "serial")


def identify(device_file: str, kind: tuple[str, str] = CAMERAS) -> Identity | None:
    """Which device /dev/video0 (or /dev/ttyACM0, or a link to either) is, from sysfs; None where
    sysfs does not say (not Linux, a pseudo-terminal, a device that is not plugged in)."""
    node = SYSFS / kind[0] / os.path.basename(os.path.realpath(device_file))
    try:
        device = (node / "device").resolve(strict=True)
    except OSError:
        return None
    name = _read(node / "name")
    if (device / "bInterfaceNumber").exists():  # a USB interface: the device is the USB device above it
        usb = device.parent
        return Identity(_read(usb / "product") or name, _read(usb / "serial"), f"USB port {usb.name}")
    return Identity(name, "", device.name)  # a camera on the board (CSI), a built-in serial port


def find(identity: Identity, kind: tuple[str, str] = CAMERAS) -> str | None:
    """The device file that `identity` is now, where it is plugged in (its first node)."""
    try:
        nodes = sorted((SYSFS / kind[0]).iterdir(), key=lambda n: (len(n.name), n.name))
    except OSError:
        return None
    for node in nodes:
        path = str(DEV / node.name)
        if _read(node / "index") in ("", "0") and (found := identify(path, kind)) and found.same_device(identity):
            return path
    return None


def where_now(camera: Identity) -> str:
    """'; that camera is now /dev/video2 ("device": "/dev/v4l/by-id/..." always opens it)', or ""
    where it is not found (not plugged in, or not a camera of this machine)."""
    now = find(camera)
    if now is None:
        return ""
    stable = stable_path(now, camera)
    return f"; that camera is now {now}" + (f' ("device": "{stable}" always opens it)' if stable else "")


def stable_path(device_file: str, identity: Identity, kind: tuple[str, str] = CAMERAS) -> str | None:
    """The udev link that always opens this device: by-id for a device with a serial number (it
    follows the device to any port), else by-path (the port). None: no udev link."""
    target = os.path.realpath(device_file)
    for links in ("by-id", "by-path") if identity.serial else ("by-path",):
        try:
            found = sorted((DEV / kind[1] / links).iterdir())
        except OSError:
            continue
        for link in found:
            if os.path.realpath(link) == target:
                return str(link)
    return None


def by_number(device: int | str) -> bool:
    """Whether the config names the device by its number (0, /dev/video0, /dev/ttyACM0), which can change."""
    return isinstance(device, int) or re.fullmatch(r"(video|ttyACM|ttyUSB)\d+", os.path.basename(device)) is not None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def device_users(path: str) -> list[str]:
    """The other processes that have the device `path` open (the arm's serial port, a camera),
    as "pid 4242 (lerobot-teleoperate --robot.port=...)". Linux only (/proc); without root, only
    this user's processes are seen."""
    device = os.path.realpath(path)
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:  # no /proc (macOS)
        return []
    users = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # another user's process, or gone
            continue
        if any(_link(f"/proc/{pid}/fd/{fd}") == device for fd in fds):
            users.append(f"pid {pid} ({_command(pid)})")
    return users


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _command(pid: str, width: int = 80) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    if not words[0]:  # a process that is exiting
        return "?"
    if len(words) > 1 and os.path.basename(words[0]).startswith(b"python"):  # python .../lerobot-teleoperate ...
        words = words[1:]
    words[0] = os.path.basename(words[0])
    text = b" ".join(words).decode(errors="replace")
    return text if len(text) <= width else text[:width - 3] + "..."
