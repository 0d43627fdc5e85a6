"""The dataset folder being written: what it already holds, whether new episodes fit, and
replacing it in one step.

A run never writes inside DATASET_DIR. It builds the complete new dataset in a work folder
beside it, checks it, and then exchanges the two folders atomically (renameat2
RENAME_EXCHANGE on Linux), so a kill at any moment leaves either the old dataset or the new
one, both loadable. `meta/slarm.json` records which raw episodes (by uuid) a dataset holds
and the settings they were converted with.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from slarm.common import hold_lock
from slarm.errors import Refused

SLARM_META = "meta/slarm.json"
WORK_PREFIX = ".slarm-work-"
_held = {}  # dataset folder -> its lock file, open while this process lives (claim)


class TargetError(Refused):
    """DATASET_DIR cannot take these episodes; the message says what differs."""


@dataclass
class Target:
    path: Path
    exists: bool = False
    info: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    episodes: list[dict] = field(default_factory=list)  # [{"uuid", "source"}] in dataset order

    @property
    def uuids(self) -> set[str]:
        return {e["uuid"] for e in self.episodes}


def open_target(path: Path) -> Target:
    """Read what DATASET_DIR holds. Raises TargetError if it is something we must not touch."""
    recover(path)
    refuse_unusable(path)
    info_file = path / "meta" / "info.json"
    if not info_file.exists():  # none yet, or an empty folder
        return Target(path)
    info = json.loads(info_file.read_text())
    meta = json.loads((path / SLARM_META).read_text())
    settings = {"joint_units": "rad", **meta.get("settings", {})}  # datasets made before --joint-units: radians
    return Target(path, True, info, settings, meta.get("episodes", []))


def refuse_unusable(path: Path) -> None:
    """Raises TargetError if DATASET_DIR is something we must not touch: a file, a folder that
    holds something else, a LeRobot dataset that slarm-convert did not make."""
    if path.is_file():
        raise TargetError(f"{path} is a file, not a dataset folder")
    if not path.is_dir():
        return
    if not (path / "meta" / "info.json").exists():
        if any(path.iterdir()):
            raise TargetError(f"{path} exists and is not a LeRobot dataset; give a new or empty folder")
    elif not (path / SLARM_META).exists():
        raise TargetError(f"{path} is a LeRobot dataset not made by slarm-convert; append only to slarm datasets")


def check_compatible(target: Target, fps: int, feats: dict, settings: dict) -> None:
    """Refuse to append episodes that would not match the dataset, saying what differs."""
    if not target.exists:
        return
    problems = []
    if target.info.get("codebase_version") != settings["format"]:
        problems.append(f"format {target.info.get('codebase_version')} vs {settings['format']}")
    if target.info.get("fps") != fps:
        problems.append(f"fps {target.info.get('fps')} vs {fps}")
    differ = [f"{key} {target.settings.get(key)} vs {settings.get(key)}" for key in settings
              if key != "format" and target.settings.get(key) != settings.get(key)]
    problems += differ
    theirs, ours = _recorded_features(target.info["features"]), _recorded_features(feats)
    for key in sorted(set(theirs) | set(ours)) if not differ else []:  # else the features follow from the settings
        if theirs.get(key) != ours.get(key):  # (image size, the joints' names): said once, as settings
            problems.append(f"feature {key}: {theirs.get(key)} vs {ours.get(key)}")
    if problems:
        raise TargetError(
            f"{target.path} does not match these episodes (dataset vs this run): " + "; ".join(problems)
            + ".\nConvert into a new DATASET_DIR (e.g. one per resolution), or use the settings of the dataset."
        )


def _recorded_features(feats: dict) -> dict:
    """Shape and names of state, action and cameras (not LeRobot's index columns)."""
    return {k: (tuple(v["shape"]), v.get("names")) for k, v in feats.items()
            if k.startswith(("observation.", "action"))}


def claim(target: Path) -> None:
    """This process's hold on `target`: the folder it goes in made, and the lock file beside it
    taken (held while the process lives; the operating system drops it even when killed), so
    that two runs into one dataset, each adding its own episodes, cannot replace it one after
    the other, the second without the first's episodes."""
    key = target.resolve()
    if key in _held:  # a run before, in this process (main() called in-process)
        return
    refuse_unusable(target)  # before the lock file: a refused DATASET_DIR gets nothing beside it
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = hold_lock(target.parent / f".{target.name}.slarm-convert-lock")
    except (FileExistsError, NotADirectoryError):
        blocker = next(p for p in (target.parent, *target.parent.parents) if p.exists())
        raise TargetError(f"cannot create {target.parent}: {blocker} is a file, not a folder") from None
    except OSError as e:
        raise TargetError(f"cannot write in {target.parent} ({e.strerror}); give a DATASET_DIR in a folder you can "
                          "write to") from None
    if lock is None:
        raise TargetError(f"another slarm-convert is writing into {target}; wait for it to end, then run this "
                          "command again (it adds what is still missing)")
    _held[key] = lock
    _remove_stale_work(target)


def _remove_stale_work(target: Path) -> None:
    """Work folders of this target left by killed runs (one killed right after the swap holds
    the old dataset): removed holding the claim, whether or not this run adds anything."""
    ours = f"{WORK_PREFIX}{target.name}-"
    for old in target.parent.glob(f"{ours}*"):
        if old.name[len(ours) :].isdigit():  # not the work folder of another dataset, e.g. "{name}-224"
            shutil.rmtree(old, ignore_errors=True)


def work_dir(target: Path) -> Path:
    """A fresh work folder beside the target (same file system, so the final exchange is a rename).
    Call it holding the claim: any other work folder of this target was left by a killed run."""
    _remove_stale_work(target)
    work = target.parent / f"{WORK_PREFIX}{target.name}-{os.getpid()}"
    try:
        work.mkdir()
    except OSError as e:
        raise TargetError(f"cannot write in {target.parent} ({e.strerror}); give a DATASET_DIR in a folder you "
                          "can write to") from None
    return work


def episode_entry(uuid: str, source: Path | str) -> dict:
    """An episode's line in meta/slarm.json: its uuid and where it came from as the raw folder's
    name and the file's ("so101_pickplace_v1/episode_000003.h5"), never the user's absolute path
    (the file is uploaded with the dataset). Entries written with a path are cut down to that."""
    parts = Path(source).parts[-2:] if str(source) else ()
    return {"uuid": uuid, "source": "/".join(parts)}


def write_meta(root: Path, settings: dict, episodes: list[dict]) -> None:
    (root / SLARM_META).write_text(json.dumps({"settings": settings, "episodes": episodes}, indent=1))


def replace(target: Path, new: Path) -> None:
    """Make `new` the dataset at `target`, atomically where the platform allows. Where the two
    are exchanged, `new` then holds the old dataset, for the caller to remove."""
    if target.exists() and _exchange(new, target):
        return
    if target.exists():
        backup = target.with_name(target.name + ".slarm-old")
        os.rename(target, backup)
        os.rename(new, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.rename(new, target)


def recover(target: Path) -> None:
    """Undo a kill between the two renames of the non-atomic fallback."""
    backup = target.with_name(target.name + ".slarm-old")
    if backup.exists():
        if target.exists():
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.rename(backup, target)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 with RENAME_EXCHANGE). False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    return fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0

