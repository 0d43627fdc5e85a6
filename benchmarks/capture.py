"""Capture benchmark: N seconds of `slarm-capture --sim`, preview off. Prints figures, asserts nothing.

    .venv/bin/python benchmarks/capture.py                          # 60 s, 30 fps, 1 camera
    .venv/bin/python benchmarks/capture.py --fps 60 --cameras 3

Figures: achieved fps, tick-period deviation (tick start - its deadline) p50/p99, missed
ticks, CPU of the capture process (percent of one core; the simulated devices run in
their own processes and are not counted), and MB/s written.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slarm.raw import open_episode  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--cameras", type=int, default=1)
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = json.loads((ROOT / "config.json").read_text())
        cfg.pop("camera")
        names = ["wrist", "top", "side", "front"][: a.cameras]
        cfg["cameras"] = [{"name": n, "device": i} for i, n in enumerate(names)]
        cfg["recording"]["fps"] = a.fps
        cfg["raw_dir"] = f"{tmp}/raw"
        (Path(tmp) / "config.json").write_text(json.dumps(cfg))
        cmd = [sys.executable, "-m", "slarm.capture.cli", "--config", f"{tmp}/config.json", "--sim",
               "--episodes", "1", "--episode-time", str(a.seconds), "--preview", "off"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        cpu_start = wall_start = None
        for line in proc.stdout:
            if line.startswith("Recording episode") and cpu_start is None:
                cpu_start, wall_start = _cpu(proc.pid), time.monotonic()
            if line.startswith("saved episode"):
                cpu_end, wall_end = _cpu(proc.pid), time.monotonic()
        proc.wait()
        if proc.returncode != 0 or cpu_start is None:
            sys.exit(f"capture failed (exit {proc.returncode})")
        path = next(Path(tmp, "raw", cfg["dataset_name"]).glob("*.h5"))
        with open_episode(path) as ep:
            n, t, k = ep.frame_count, ep.timestamp, ep.tick_index
            dev_ms = (t - k / ep.fps) * 1000
            dev_ms -= dev_ms.min()  # relative to the first tick
            missed = int(ep.attrs["missed_ticks"])
            duration = t[-1] - t[0]
        size_mb = path.stat().st_size / 1e6

    cpu_pct = 100 * (cpu_end - cpu_start) / (wall_end - wall_start)
    print(f"capture benchmark: {a.seconds:g} s at {a.fps} fps, {a.cameras} x 1920x1080 MJPEG camera(s), preview off")
    print(f"  achieved fps        {(n - 1) / duration:.2f}")
    p50, p99 = np.percentile(dev_ms, [50, 99])
    print(f"  tick deviation      p50 {p50:.2f} ms   p99 {p99:.2f} ms   max {dev_ms.max():.2f} ms")
    print(f"  missed ticks        {missed}")
    print(f"  capture CPU         {cpu_pct:.1f} % of one core")
    print(f"  written             {size_mb / duration:.1f} MB/s ({size_mb:.0f} MB, {n} ticks)")


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
