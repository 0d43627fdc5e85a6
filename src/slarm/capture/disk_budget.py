"""How much recording the raw folder's disk and this machine's memory still take: seconds of
room left on the disk (the status line warns, automatic episodes refuse to start without
room), and how many frames may wait in memory for a disk slower than the cameras before the
episode is given up rather than the machine running out of memory."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from .cameras import CameraError

LOW_DISK_S = 60  # less room than this many seconds of recording: the status line says so
WAITING_MEMORY_SHARE = 0.25  # frames waiting for a slow disk may take this share of the memory free at the start


class DiskBudget:
    def __init__(self, folder: Path, fps: int, cameras: list):
        self.folder, self.fps, self.cameras = folder, fps, cameras
        self._room: tuple[float, float | None] = (0.0, None)  # (when measured, seconds of recording that fit)
        self.waiting_limit = int(memory_available() * WAITING_MEMORY_SHARE)  # bytes of frames waiting to be written

    def too_much_waiting(self, backlog: int) -> bool:
        """Whether `backlog` ticks waiting to be written take more memory than may wait."""
        return backlog * (self.tick_bytes() or 0) > self.waiting_limit

    def room_s(self, backlog: int, now: bool = False) -> float | None:
        """About how many seconds of recording still fit on the raw folder's disk (None: unknown),
        from the newest frame of each camera and the `backlog` ticks still waiting to be written;
        measured at most once a second unless `now`."""
        measured, room = self._room
        if not now and time.monotonic() - measured < 1.0:
            return room
        per_tick = self.tick_bytes()
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError:
            per_tick = None
        if per_tick is None:
            room = None
        else:
            room = max(0.0, free - backlog * per_tick) / (per_tick * self.fps)
        self._room = (time.monotonic(), room)
        return room

    def tick_bytes(self) -> int | None:
        """About how many bytes a tick takes, in memory while it waits and on disk: the newest frame
        of each camera, the state and the times (None: a camera has no frame now)."""
        try:
            frames = [cam.latest().data for cam in self.cameras]
        except CameraError:
            return None
        return sum(len(f) if isinstance(f, bytes) else f.nbytes for f in frames) + 64


def memory_available() -> int:
    """Bytes of memory this process could still take: Linux's MemAvailable, within the
    container's (cgroup v2) limit where there is one; elsewhere the machine's memory."""
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return 2**31
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return free
