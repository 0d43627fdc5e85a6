"""Find the complete raw episodes in one or more raw folders, in episode order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slarm.raw import RawFormatError, list_episodes, longest_gap, open_episode

MAX_GAP_S = 1.0  # a longer pause between two recorded ticks is no demonstration: the episode is skipped


@dataclass(frozen=True)
class Source:
    path: Path
    uuid: str
    frames: int
    fps: int
    task: str
    robot_type: str
    state_names: tuple[str, ...]
    cameras: tuple[tuple[str, int, int], ...]  # (name, width, height)
    calibration: dict  # the arm's calibration while recording (slarm.capture.arm.SO101Arm.calibration_snapshot)
    identities: dict  # which camera each name was, where known: name -> slarm.raw.Identity


@dataclass(frozen=True)
class LeftOut:
    """A raw file that is left out of the dataset, and why, in words."""

    path: Path
    reason: str


def find(raw_dirs: list[Path], max_gap_s: float = MAX_GAP_S) -> tuple[list[Source], list[Path], list[LeftOut]]:
    """(readable episodes, in folder order then episode order; unfinished .partial files;
    damaged or implausible files, each with the reason it is left out)."""
    found, unfinished, refused = [], [], []
    for folder in raw_dirs:
        complete, partial = list_episodes(folder)
        unfinished += partial
        for path in complete:
            try:
                found.append(_source(path, max_gap_s))
            except RawFormatError as e:
                refused.append(LeftOut(path, str(e).removeprefix(f"{path.name}: ")))
    return found, unfinished, refused


def _source(path: Path, max_gap_s: float) -> Source:
    with open_episode(path) as ep:
        if ep.frame_count == 0:
            raise RawFormatError(f"{path.name}: no frames")
        gap, row = longest_gap(ep)
        if gap > max_gap_s:
            raise RawFormatError(f"{path.name}: a gap of {gap:.1f} s between ticks {int(ep.tick_index[row])} and "
                                 f"{int(ep.tick_index[row + 1])} (longer than --max-gap {max_gap_s:g} s: "
                                 "recording stalled, or the machine slept)")
        try:
            return Source(
                path=path, uuid=ep.uuid, frames=ep.frame_count, fps=ep.fps, task=ep.task,
                robot_type=str(ep.attrs.get("robot_type", "")), state_names=tuple(ep.state_names),
                cameras=tuple((c.name, c.width, c.height) for c in ep.cameras.values()),
                calibration=_dict(ep.attrs.get("calibration")),
                identities={c.name: c.identity for c in ep.cameras.values() if c.identity},
            )
        except Exception as e:
            raise RawFormatError(f"{path.name}: damaged ({e})") from None


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def holds_episodes(folder: Path) -> bool:
    """Whether `folder` holds episode files (complete or not) of its own."""
    complete, partial = list_episodes(folder)
    return bool(complete or partial)


def is_lerobot_dataset(folder: Path) -> bool:
    return (folder / "meta" / "info.json").is_file()


def why_no_episodes(folder: Path) -> str:
    """What `folder`, which holds no episode files, is instead, and what to give."""
    if is_lerobot_dataset(folder):
        return f"{folder} is a LeRobot dataset, not a folder of raw episodes"
    inside = [d for d in sorted(folder.iterdir()) if d.is_dir() and holds_episodes(d)] if folder.is_dir() else []
    if inside:
        return (f"{folder} holds no episodes itself, but its folder{'s' if len(inside) > 1 else ''} "
                f"{', '.join(map(str, inside))} do{'' if len(inside) > 1 else 'es'}: give "
                + ("one of them (or several)" if len(inside) > 1 else "that one"))
    return f"no raw episodes in {folder} (slarm-capture writes them to {{raw_dir}}/{{dataset_name}})"
