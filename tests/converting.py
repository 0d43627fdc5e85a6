"""Helpers that run slarm-convert as a user does and read what it wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import ROOT


def convert(*args: str, timeout: float = 300, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slarm.convert.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)


def load(root: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("local/test", root=root, video_backend="pyav")


def column(ds, key: str) -> np.ndarray:
    return np.stack([np.asarray(v) for v in ds.hf_dataset[key]])


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    return [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat") if stat_field(stat, 4) == pid]


def stat_field(stat: Path, field: int) -> int | None:
    """Field `field` (numbered as in proc(5): 4 ppid, 19 nice) of a /proc stat file; None once
    the process or thread has ended."""
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[field - 3])
    except (OSError, IndexError, ValueError):
        return None
