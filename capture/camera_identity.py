"""Which physical camera a device file is, so that a camera's name stays on its camera.

Camera numbers (/dev/video0, /dev/video2) are handed out in the order the cameras are found:
after a reboot, a replug or a USB hub's power glitch the wrist camera can come back as the
number the top camera had. Linux's sysfs says which camera a number is (its model, serial
number and USB port), and udev makes /dev/v4l/by-id and /dev/v4l/by-path links that always
open the same camera. Elsewhere (macOS, the simulated cameras) a camera has no identity here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

SYSFS = Path("/sys/class/video4linux")
DEV = Path("/dev")


@dataclass(frozen=True)
class Identity:
    model: str  # the camera's product name, as it reports it
    serial: str  # its serial number; "" for the many cameras that have none
    port: str  # where it is plugged in: "USB port 3-2" (bus 3, port 2; "3-1.4": port 4 of a hub on port 1)

    def __str__(self) -> str:
        return f"{self.model or 'a camera'} ({self.port}{f', serial {self.serial}' if self.serial else ''})"

    def same_camera(self, other: Identity) -> bool:
        """Two cameras with serial numbers are the same camera wherever they are plugged in;
        without them, only the port tells two cameras of one model apart."""
        if self.serial and other.serial:
            return (self.model, self.serial) == (other.model, other.serial)
        return (self.model, self.port) == (other.model, other.port)

    def attrs(self) -> dict[str, str]:
        return {"model": self.model, "serial": self.serial, "port": self.port}


def from_attrs(attrs) -> Identity | None:
    """The identity stored with a camera in a raw file (None: not known, or an older file)."""
    found = Identity(*(str(attrs.get(k, "")) for k in ("model", "serial", "port")))
    return found if found.port else None


def identify(device_file: str) -> Identity | None:
    """Which camera /dev/videoN (or a link to it) is, from sysfs; None where sysfs does not say."""
    node = SYSFS / os.path.basename(os.path.realpath(device_file))
    try:
        device = (node / "device").resolve(strict=True)
    except OSError:
        return None
    name = _read(node / "name")
    if (device / "bInterfaceNumber").exists():  # a USB interface: the camera is the USB device above it
        usb = device.parent
        return Identity(_read(usb / "product") or name, _read(usb / "serial"), f"USB port {usb.name}")
    return Identity(name, "", device.name)  # a camera on the board (CSI, platform devices)


def find(identity: Identity) -> str | None:
    """The device file that `identity` is now, where it is plugged in (its first video node)."""
    try:
        nodes = sorted(SYSFS.iterdir(), key=lambda n: (len(n.name), n.name))
    except OSError:
        return None
    for node in nodes:
        path = str(DEV / node.name)
        if _read(node / "index") in ("", "0") and (found := identify(path)) and found.same_camera(identity):
            return path
    return None


def where_now(identity: Identity) -> str:
    """'; that camera is now /dev/video2 ("device": "/dev/v4l/by-id/..." always opens it)', or ""
    where it is not found (not plugged in, or not a camera of this machine)."""
    now = find(identity)
    if now is None:
        return ""
    stable = stable_path(now, identity)
    return f"; that camera is now {now}" + (f' ("device": "{stable}" always opens it)' if stable else "")


def stable_path(device_file: str, identity: Identity) -> str | None:
    """The udev link that always opens this camera: /dev/v4l/by-id/... for a camera with a serial
    number (it follows the camera to any port), else /dev/v4l/by-path/... (the port). None: no udev."""
    target = os.path.realpath(device_file)
    for kind in ("by-id", "by-path") if identity.serial else ("by-path",):
        try:
            links = sorted((DEV / "v4l" / kind).iterdir())
        except OSError:
            continue
        for link in links:
            if os.path.realpath(link) == target:
                return str(link)
    return None


def by_number(device: int | str) -> bool:
    """Whether the config names the camera by its number (0, "/dev/video0"), which can change."""
    return isinstance(device, int) or re.fullmatch(r"video\d+", os.path.basename(device)) is not None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""
