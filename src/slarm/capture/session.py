"""A recording session: keys and timers start and stop episodes, faults discard them.

The main thread runs this loop (keys, status line, episode files, reconnecting devices);
the sampling thread (sampler.py) only samples and hands ticks over through on_tick().
"""

from __future__ import annotations

import datetime as dt
import platform
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from slarm.capture.device_identity import where_now
from slarm.capture.status import Output, idle_line, recording_line
from slarm.common import count, disk_full, first_line, hold_lock, raise_if_stopped
from slarm.errors import Refused, SlarmError
from slarm.raw import (
    CameraInfo,
    EpisodeWriter,
    RawFormatError,
    episode_index,
    episode_name,
    list_episodes,
    open_episode,
)
from slarm.so101 import zero_shifts

from . import keys as K
from .cameras import CameraError
from .disk_budget import LOW_DISK_S, WAITING_MEMORY_SHARE, DiskBudget
from .sampler import Sampler
from .state_source import StateSource

RETRY_EVERY_S = 1.0
SLOW_CAMERA = 0.8  # a camera giving new frames at under this share of the rate asked of it is reported


class SessionError(Refused):
    """The session cannot start (bad combination of settings, incompatible raw folder)."""


class RecordingError(SlarmError):
    """Episodes cannot be written any more (disk full, disk gone): the session stops."""


@dataclass
class AutoEpisodes:
    """--episodes N --episode-time S: start and stop episodes by themselves."""

    count: int
    seconds: float


class Session:
    def __init__(self, cfg, state_source: StateSource, cameras: list, out: Output, keys: K.Keys, preview,
                 auto: AutoEpisodes | None = None):
        self.cfg = cfg
        self.state_source = state_source
        self.cameras = cameras
        self.out = out
        self.keys = keys
        self.preview = preview
        self.auto = auto
        self.folder: Path = cfg.episodes_dir
        self.next_index = 0
        self.saved = 0
        self.discarded = 0
        self.episode: EpisodeWriter | None = None
        self.fault: Exception | None = None
        self.broken: list = []  # devices to reconnect
        self._lock = None  # the raw folder's lock file, held while this process lives
        self.disk = DiskBudget(self.folder, cfg.fps, cameras)
        self.sampler = Sampler(state_source.read, cameras, cfg.fps, self._on_tick, self._on_fault)

    # --- called on the sampling thread -------------------------------------------------
    def _on_tick(self, tick) -> None:
        episode = self.episode
        if episode is not None:
            episode.put(tick)
        self.preview.offer(tick)

    def _on_fault(self, error: Exception) -> None:
        self.fault = error

    # --- main thread ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Make the raw folder this session's alone, check it can take this session's episodes,
        find the next episode number."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # beside the folder, which holds episode files only
            self._lock = hold_lock(self.folder.parent / f".{self.folder.name}.slarm-capture-lock")
        except OSError as e:
            raise SessionError(f"cannot record into {self.folder}: {e.strerror or e}. "
                               "Set raw_dir in the config to a folder you can write to") from None
        if self._lock is None:
            raise SessionError(f"another slarm-capture is recording into {self.folder}. Stop it first, "
                               "or give this session another dataset_name (or raw_dir)")
        complete, partial = list_episodes(self.folder)
        for p in partial:
            self.out.message(f"note: {p} is an unfinished episode from an earlier run; it is ignored")
        if complete:
            self.next_index = episode_index(complete[-1]) + 1
            self.out.message(f"resuming: {count(len(complete), 'episode')} in {self.folder}, next is episode {self.next_index}")
            last, moved, recorded_with = self._newest_readable(complete)
            if moved:
                self.out.message(
                    f"note: the arm's calibration is not the one {last.name} was recorded with: "
                    f"{', '.join(moved)} (recalibrated, or another arm?). The same pose now reads other joint angles "
                    "than in the earlier episodes; to keep the two apart, record into another dataset_name."
                )
            if last is not None:
                self._warn_other_cameras(recorded_with, last.name)

    def _newest_readable(self, complete: list[Path]) -> tuple[Path | None, list[str], dict]:
        """The newest episode that can be read, checked as _check_compatible does. A damaged one
        after it is named and left as it is (slarm-inspect and slarm-convert name it too):
        recording goes on after the highest number."""
        for path in reversed(complete):
            try:
                return path, *self._check_compatible(path)
            except RawFormatError as e:
                self.out.warning(f"{self.folder / str(e)}; it is left as it is (slarm-convert skips it), "
                                 "recording goes on after it")
        return None, [], {}

    def _warn_other_cameras(self, recorded_with: dict, last: str) -> None:
        """Say which camera names now open another camera than in the last episode: camera numbers
        change order after a reboot or replug, and the wrist camera's name would then record the top view."""
        for cam in self.cameras:
            then, now = recorded_with.get(cam.name), cam.identify()
            if then is not None and now is not None and not now.same_device(then):
                self.out.warning(
                    f"camera '{cam.name}' is now {now}, not {then} as in {last}{where_now(then)}. Camera "
                    "numbers change order after a reboot or replug: if the live view is not the one this name had, "
                    "quit (ESC) and set this camera's \"device\"; if the camera was changed on purpose, go on "
                    "(slarm-convert names the episodes recorded with each)")

    def _check_compatible(self, last: Path) -> tuple[list[str], dict]:
        """Refuse a folder recorded with other settings; the arm's joints whose zeros moved since
        `last`, and which camera each name had in `last` (where known)."""
        with open_episode(last) as ep:  # RawFormatError for a damaged file
            theirs = (ep.fps, sorted(ep.cameras), ep.state_names)
            calibration = ep.attrs.get("calibration", {})
            recorded_with = {name: cam.identity for name, cam in ep.cameras.items()}
        ours = (self.cfg.fps, sorted(c.name for c in self.cameras), list(self.state_source.state_names))
        for label, a, b in zip(("fps", "cameras", "state names"), theirs, ours):
            if a != b:
                raise SessionError(
                    f"{self.folder} holds episodes recorded with {label} {a}, this config records {b}.\n"
                    "Use another dataset_name (or raw_dir) for this setup, or record with the earlier settings."
                )
        if self.state_source.robot_type != "so101":
            return [], recorded_with
        return zero_shifts(calibration, self.state_source.calibration_snapshot()), recorded_with

    def run(self) -> None:
        """Record until ESC, Ctrl-C, or the automatic episodes are done. Devices are connected."""
        self.out.message(self._help())
        self.sampler.start()
        try:
            while True:
                raise_if_stopped()  # a Ctrl-C that a library swallowed
                if self.episode is not None and self.episode.error is not None:  # disk full, disk gone
                    error = self.episode.error
                    self._discard("it could not be written")
                    raise RecordingError(self._write_error(error))
                if self.episode is not None and self.disk.too_much_waiting(self.episode.backlog):
                    raise RecordingError(self._disk_too_slow())  # before the machine runs out of memory
                if self.fault is not None:
                    self._handle_fault()
                if self.broken:
                    self._try_reconnect()
                for event in self.keys.poll():
                    if not self._on_key(event):
                        return
                if self.auto is not None and not self._auto_step():
                    return
                self._show_status()
                time.sleep(0.05)
        finally:
            self.sampler.stop()
            if self.episode is not None:
                self._discard("session ended")

    def _help(self) -> str:
        if self.auto is not None:
            return (f"recording {count(self.auto.count, 'episode')} of {self.auto.seconds:g} s into {self.folder}"
                    + (" (SPACE/R/ESC still work)" if self.keys.source != "none" else ""))
        return f"recording into {self.folder}: SPACE start/stop, R discard, ESC quit ({self.keys.source} keys)"

    def _on_key(self, event: str) -> bool:
        if event == K.QUIT:
            if self.episode is not None:
                self._discard("ESC")
            return False
        if self.broken:
            self.out.message("waiting for a device to come back; ESC quits")
            return True
        if event == K.TOGGLE:
            if self.episode is None:
                self._start()
            else:
                self._save()
        elif event == K.DISCARD and self.episode is not None:
            self._discard("R")
        return True

    def _auto_step(self) -> bool:
        if self.broken:
            return True
        if self.episode is not None and self.episode.full:
            self._save()
        if self.saved >= self.auto.count:
            return False
        if self.episode is None:
            self._start()
        return True

    def _start(self) -> None:
        index = self.next_index
        path = self.folder / f"{episode_name(index)}.h5"
        room = self.disk.room_s(self._backlog(), now=True) if self.auto is not None else None
        if room is not None and room < self.auto.seconds:
            raise RecordingError(
                f"not enough disk space for episode {index}: {self.folder} has room for about {room:.0f} s of "
                f"recording, an episode takes {self.auto.seconds:g} s. " + self._how_to_go_on())
        lower, upper = self.state_source.limits()
        self.episode = EpisodeWriter(
            path,
            attrs=self._episode_attrs(),
            state_names=list(self.state_source.state_names),
            state_attrs={"units": self.state_source.units, "lower_limits": lower, "upper_limits": upper},
            cameras=[CameraInfo(c.name, c.width, c.height, c.fps, c.encoding, c.source, str(c.cfg.device),
                                **(c.identity.attrs() if c.identity else {})) for c in self.cameras],
            max_ticks=round(self.auto.seconds * self.cfg.fps) if self.auto else None,
        )
        self.recording_index = index

    def _episode_attrs(self) -> dict:
        software = {"slarm": _version("slarm"), "lerobot": _version("lerobot"), "h5py": _version("h5py"),
                    "python": platform.python_version(), "platform": platform.platform()}
        return {
            "fps": self.cfg.fps,
            "task": self.cfg.task_description,
            "robot_type": self.state_source.robot_type,
            "robot_id": self.cfg.robot.id,
            "state_source": type(self.state_source).__name__,
            "episode_uuid": str(uuid.uuid4()),
            "start_time": dt.datetime.now().astimezone().isoformat(),
            "calibration": self.state_source.calibration_snapshot(),
            "software": software,
        }

    def _save(self) -> None:
        episode, self.episode = self.episode, None
        if episode.ticks_put == 0:
            episode.discard()
            self.out.message(f"episode {self.recording_index} had no frames; nothing saved")
            return
        if episode.backlog > self.cfg.fps:
            self.out.message(f"saving episode {self.recording_index}: writing its last {count(episode.backlog, 'frame')}")
        try:
            path = episode.save()
        except Exception as e:
            self._count_discarded("it could not be written")
            raise RecordingError(self._write_error(e)) from None
        self.saved += 1
        self.next_index = self.recording_index + 1
        frames, missed = episode.ticks_put, episode.missed_ticks
        self.out.message(
            f"saved episode {self.recording_index}: {count(frames, 'frame')}, {episode.duration:.1f}s"
            + (f", {count(missed, 'missed tick')}" if missed else "") + f" -> {path}"
        )
        for cam, gave, asked in self._slow_cameras(episode):
            self.out.warning(
                f"{cam.label} gave {gave:.0f} new frames/s, not {asked}; a tick without a new frame shows "
                "the one before again. USB cameras on auto exposure slow down in dim light: add light, or choose "
                f"a mode with {asked} fps (v4l2-ctl --list-formats-ext), or set this camera's \"fps\" to a rate "
                "it can hold")

    def _slow_cameras(self, episode: EpisodeWriter) -> list[tuple]:
        """(camera, new frames per second, frames per second asked) for each camera clearly slower than asked."""
        n = episode.frames_written
        if n < self.cfg.fps:  # under a second of frames: too few to tell
            return []
        slow = []
        for cam in self.cameras:
            asked = min(cam.fps, self.cfg.fps)
            gave = (n - episode.repeated_frames[cam.name]) / n * self.cfg.fps
            if gave < SLOW_CAMERA * asked:
                slow.append((cam, gave, asked))
        return slow

    def _discard(self, why: str) -> None:
        episode, self.episode = self.episode, None
        episode.discard()
        self._count_discarded(why)

    def _count_discarded(self, why: str) -> None:
        self.discarded += 1
        self.out.message(f"discarded episode {self.recording_index} ({why})")

    def _write_error(self, error: BaseException) -> str:
        if disk_full(error):
            return f"the disk holding {self.folder} is full. " + self._how_to_go_on()
        return f"cannot write episodes into {self.folder}: {first_line(error)}. " + self._how_to_go_on()

    def _disk_too_slow(self) -> str:
        """Discard the episode whose frames wait in memory for the disk, and say why."""
        ep, tick = self.episode, self.disk.tick_bytes() or 0
        seconds = max(ep.duration, 1e-3)
        gave, wrote, waiting = ep.ticks_put * tick / seconds, ep.frames_written * tick / seconds, ep.backlog * tick
        self._discard("the disk could not keep up")
        return (f"the disk holding {self.folder} is slower than the cameras: it wrote {_mb(wrote)}/s while they gave "
                f"{_mb(gave)}/s, and {_mb(waiting)} of frames waited in memory, as much as slarm-capture lets wait "
                f"({WAITING_MEMORY_SHARE:.0%} of the memory free at the start). Set raw_dir to a faster disk, or ask "
                "less of the cameras (smaller capture_width/capture_height, \"storage\": \"jpeg\" rather than "
                "\"rgb\", a lower fps). Episodes already saved are kept; run the same command again to go on: "
                f"recording resumes at episode {self.next_index}")

    def _how_to_go_on(self) -> str:
        return ("Episodes already saved are kept. Free some space (or set raw_dir to another disk), then run "
                f"the same command again: recording resumes at episode {self.next_index}")

    def _backlog(self) -> int:
        """Ticks of the current episode still waiting to be written."""
        return self.episode.backlog if self.episode is not None else 0

    def _handle_fault(self) -> None:
        error, self.fault = self.fault, None
        self.sampler.stop()
        device = self._failed_device(error)
        self.out.warning(str(error))
        if self.episode is not None:
            self._discard(f"{_label(device)} failed")
        try:
            device.disconnect()
        except Exception:
            pass
        self.broken = [device]
        self.last_retry = 0.0

    def _failed_device(self, error: Exception):
        if isinstance(error, CameraError):
            for cam in self.cameras:
                if cam.name == error.camera:
                    return cam
        return self.state_source

    def _try_reconnect(self) -> None:
        if time.monotonic() - self.last_retry < RETRY_EVERY_S:
            return
        self.last_retry = time.monotonic()
        device = self.broken[0]
        try:
            device.connect()
        except Exception as e:
            self.out.status(f"reconnecting {_label(device)} ... ({first_line(e)}) | ESC quits")  # one line
            return
        self.broken = []
        self.out.message(f"{_label(device)} is back; recording can go on")
        self.sampler.start()

    def _show_status(self) -> None:
        if self.broken:
            return
        room = self.disk.room_s(self._backlog())
        low_disk = room if room is not None and room < LOW_DISK_S else None
        if self.episode is not None:
            slow = [(cam.name, gave, asked) for cam, gave, asked in self._slow_cameras(self.episode)]
            self.out.status(recording_line(self.recording_index, self.episode, self.cfg.fps, slow, low_disk))
        else:
            self.out.status(idle_line(self.saved, self.discarded, self.next_index, low_disk, self.keys.source != "none"))


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def _label(device) -> str:
    return device.label


def _version(package: str) -> str:
    """The installed version of `package`, or "not installed" (e.g. slarm run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
