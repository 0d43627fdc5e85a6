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
from dataclasses import dataclass
from pathlib import Path

SYSFS = Path("/sys/class")
DEV = Path("/dev")
CAMERAS = ("video4linux", "v4l")  # (sysfs class, folder of udev's links under /dev)
SERIAL_PORTS = ("tty", "serial")


@dataclass(frozen=True)
class Identity:
    model: str  # the device's product name, as it reports it
    serial: str  # its serial number; "" for the many devices that have none
    port: str  # where it is plugged in: "USB port 3-2" (bus 3, port 2; "3-1.4": port 4 of a hub on port 1)

    def __str__(self) -> str:
        return f"{self.model or 'a device'} ({self.port}{f', serial {self.serial}' if self.serial else ''})"

    def same_device(self, other: Identity) -> bool:
        """Two devices with serial numbers are the same device wherever they are plugged in;
        without them, only the port tells two devices of one model apart."""
        if self.serial and other.serial:
            return (self.model, self.serial) == (other.model, other.serial)
        return (self.model, self.port) == (other.model, other.port)

    def attrs(self) -> dict[str, str]:
        return {"model": self.model, "serial": self.serial, "port": self.port}


def from_attrs(attrs) -> Identity | None:
    """The identity stored with a device in a raw file (None: not known, or an older file)."""
    found = Identity(*(str(attrs.get(k, "")) for k in ("model", "serial", "port")))
    return found if found.port else None


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
