"""What a raw episode holds and what is wrong with it, from the file alone (read-only).

Per episode: duration, frames, achieved fps, tick-period deviation, missed ticks, cameras,
size; flags for a rate below 95 % of the configured fps, a state frozen for more than 1 s
(a stuck bus or a motor that stopped answering reads the same value over and over),
repeated camera frames (a tick got the same frame as the tick before), no frames, a pause
between ticks longer than slarm-convert's --max-gap, and camera frames that are not whole
JPEGs of the stored size (checked from their markers, without decoding; with decode=True
every frame is decoded, and those slarm-convert would replace are flagged too).
A file that cannot be read at all is listed as unreadable, with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from slarm.common import listed
from slarm.convert.sources import MAX_GAP_S
from slarm.mjpeg import structure_problem
from slarm.raw import episode_index, list_episodes, longest_gap, open_episode

LOW_FPS = 0.95  # flag below this fraction of the configured fps
FROZEN_S = 1.0  # flag a state that does not change for longer than this


@dataclass
class CameraReport:
    name: str
    width: int
    height: int
    encoding: str
    fps: int
    repeated_frames: int


@dataclass
class EpisodeReport:
    file: str
    index: int | None
    uuid: str
    task: str
    fps: int
    frames: int
    duration_s: float
    achieved_fps: float
    period_deviation_p99_ms: float
    missed_ticks: int
    longest_frozen_s: float
    size_bytes: int
    cameras: list[CameraReport] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


@dataclass
class Inspection:
    episodes: list[EpisodeReport]
    unfinished: list[str]  # .h5.partial files: a capture still running, or killed
    unreadable: list[dict]  # {"file", "reason"}

    def totals(self) -> dict:
        return {
            "episodes": len(self.episodes),
            "frames": sum(e.frames for e in self.episodes),
            "duration_s": round(sum(e.duration_s for e in self.episodes), 3),
            "missed_ticks": sum(e.missed_ticks for e in self.episodes),
            "size_bytes": sum(e.size_bytes for e in self.episodes),
            "flagged": sum(1 for e in self.episodes if e.flags),
            "unfinished": len(self.unfinished),
            "unreadable": len(self.unreadable),
        }

    def as_dict(self) -> dict:
        return {"episodes": [asdict(e) for e in self.episodes], "unfinished": self.unfinished,
                "unreadable": self.unreadable, "totals": self.totals()}


def inspect(target: Path, decode: bool = False, max_gap_s: float = MAX_GAP_S) -> Inspection:
    """A raw folder (every episode in it) or one episode file."""
    if target.is_file():
        files, partial = [target], []
    else:
        files, partial = list_episodes(target)
    episodes, unreadable = [], []
    for path in files:
        try:
            episodes.append(episode_report(path, decode, max_gap_s))
        except Exception as e:  # RawFormatError for what open_episode finds; a damaged file may fail later too
            reason = str(e).removeprefix(f"{path.name}: ") or type(e).__name__
            unreadable.append({"file": str(path), "reason": reason})
    return Inspection(episodes, [str(p) for p in partial], unreadable)


def episode_report(path: Path, decode: bool = False, max_gap_s: float = MAX_GAP_S) -> EpisodeReport:
    with open_episode(path) as ep:
        n, fps = ep.frame_count, ep.fps
        t = ep.timestamp
        duration = float(t[-1] - t[0]) if n > 1 else 0.0
        periods = np.diff(t) - np.diff(ep.tick_index) / fps
        report = EpisodeReport(
            file=str(path), index=episode_index(path), uuid=ep.uuid, task=ep.task, fps=fps, frames=n,
            duration_s=round(duration, 3),
            achieved_fps=round((n - 1) / duration, 2) if duration > 0 else 0.0,
            period_deviation_p99_ms=round(float(np.percentile(np.abs(periods), 99)) * 1000, 2) if n > 1 else 0.0,
            missed_ticks=int(ep.tick_index[-1] - ep.tick_index[0] + 1 - n) if n else 0,
            longest_frozen_s=round(longest_frozen(ep.state, t), 3),
            size_bytes=path.stat().st_size,
            cameras=[CameraReport(c.name, c.width, c.height, c.encoding, c.fps,
                                  int(np.count_nonzero(np.diff(c.frame_seq) == 0)))
                     for c in ep.cameras.values()],
        )
        gap, row = longest_gap(ep)
        if gap > max_gap_s:
            report.flags.append(f"a gap of {gap:.1f}s after tick {int(ep.tick_index[row])} (convert skips it)")
        report.flags += frame_problems(ep, decode)
    if n == 0:
        report.flags.append("no frames (convert skips it)")
    if n > 1 and report.achieved_fps < LOW_FPS * fps:
        report.flags.append(f"low fps ({report.achieved_fps:g} < {LOW_FPS:.0%} of {fps})")
    if report.longest_frozen_s > FROZEN_S:
        report.flags.append(f"state frozen {report.longest_frozen_s:.1f}s")
    for c in report.cameras:
        if c.repeated_frames:
            report.flags.append(f"{c.name}: {c.repeated_frames} repeated frames")
    return report


def frame_problems(ep, decode: bool = False) -> list[str]:
    """A flag per camera and kind of problem with its stored JPEG frames, naming the frames."""
    from slarm.convert.frames import decode_problem

    flags = []
    for cam in ep.cameras.values():
        if cam.encoding != "jpeg":
            continue
        found: dict[str, list[int]] = {}
        for i in range(ep.frame_count):
            try:
                data = ep.stored(cam.name, i)
            except Exception as e:  # a damaged heap ID: h5py cannot find the bytes
                found.setdefault(f"cannot be read ({e})", []).append(i)
                continue
            if not len(data) and i > 0 and ep.stores_repeats_once and cam.frame_seq[i] == cam.frame_seq[i - 1]:
                continue  # the camera gave the frame before again: its bytes are stored once
            problem = structure_problem(data, cam.width, cam.height)
            if problem is None and decode:
                problem = decode_problem(np.asarray(data))
            if problem is not None:
                found.setdefault(problem, []).append(i)
        for problem, rows in found.items():
            flags.append(f"{cam.name}: frame{'s' if len(rows) > 1 else ''} {listed(rows)}: {problem}")
    return flags


def longest_frozen(state: np.ndarray, t: np.ndarray) -> float:
    """The longest time over which every state value stayed exactly the same."""
    if len(state) < 2:
        return 0.0
    same = np.all(np.diff(state, axis=0) == 0, axis=1)  # same[i]: row i+1 equals row i
    longest, start = 0.0, None
    for i, s in enumerate(np.append(same, False)):
        if s and start is None:
            start = i
        elif not s and start is not None:
            longest = max(longest, float(t[i] - t[start]))
            start = None
    return longest
