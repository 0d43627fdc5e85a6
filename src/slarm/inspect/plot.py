"""One PNG to look over a recording: per episode, the state over time and the tick timing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slarm.raw import open_episode

MAX_EPISODES = 40  # more would be unreadable in one picture; the first ones are drawn


def plot(files: list[Path], out: Path) -> int:
    """Draw up to MAX_EPISODES episodes into `out` (PNG). Returns how many were drawn."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    files = files[:MAX_EPISODES]
    fig, axes = plt.subplots(len(files), 2, figsize=(14, 2.6 * len(files)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    for row, path in zip(axes, files):
        with open_episode(path) as ep:
            t = ep.timestamp - ep.timestamp[0]
            for i, name in enumerate(ep.state_names):
                row[0].plot(t, ep.state[:, i], lw=1, label=name)
            row[0].set_title(f"{path.name}: {ep.task}", fontsize=9, loc="left")
            row[0].set_ylabel(ep.state_attrs.get("units", ""))
            row[0].legend(fontsize=7, ncol=max(1, len(ep.state_names) // 4), loc="upper right")
            deviation_ms = (ep.timestamp - ep.timestamp[0] - (ep.tick_index - ep.tick_index[0]) / ep.fps) * 1000
            row[1].plot(t, deviation_ms, lw=1, color="tab:gray")
            missed = np.flatnonzero(np.diff(ep.tick_index) > 1)
            if len(missed):
                row[1].scatter(t[missed + 1], deviation_ms[missed + 1], color="tab:red", s=12, zorder=3,
                               label=f"after missed ticks ({len(missed)})")
                row[1].legend(fontsize=7, loc="upper right")
            row[1].set_title(f"tick deviation from schedule (ms), {ep.fps} fps", fontsize=9, loc="left")
        for ax in row:
            ax.set_xlabel("s", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return len(files)
