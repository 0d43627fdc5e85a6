"""Raw ticks onto LeRobot's time grid, where frame i is at i / fps.

A raw episode's tick_index says which tick of the fixed-rate loop each row is; a missed
tick leaves a gap. Grid slot j takes the row of tick j, or, for a missed tick, the row
nearest in time (the earlier one on a tie), and the repeat is counted.
"""

from __future__ import annotations

import numpy as np


def grid_rows(tick_index: np.ndarray) -> tuple[np.ndarray, int]:
    """(row for each grid slot 0..last tick, number of slots filled by repeating a neighbour)."""
    ticks = np.asarray(tick_index, dtype=np.int64)
    ticks = ticks - ticks[0]
    slots = np.arange(ticks[-1] + 1)
    after = np.clip(np.searchsorted(ticks, slots), 0, len(ticks) - 1)
    before = np.clip(after - 1, 0, len(ticks) - 1)
    take_before = np.abs(slots - ticks[before]) <= np.abs(ticks[after] - slots)
    rows = np.where(take_before, before, after)
    return rows, int(len(slots) - len(ticks))


def actions(state: np.ndarray, mode: str) -> np.ndarray:
    """action = state, or next state (action[t] = state[t+1], the last frame keeps its own state)."""
    if mode == "state":
        return state.copy()
    if mode == "next-state":
        return np.concatenate([state[1:], state[-1:]], axis=0)
    raise ValueError(f"unknown action mode {mode!r}")
