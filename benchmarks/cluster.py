"""Local workers vs --ray on this machine: what preparing episodes as Ray tasks costs.

    .venv/bin/python benchmarks/cluster.py                  # 20 episodes x 300 frames, 2 runs each
    .venv/bin/python benchmarks/cluster.py --episodes 8 --frames 150 --repeat 1

The same raw episodes (benchmarks/convert.py's) are converted by `slarm-convert RAW OUT
--workers CORES` and by `slarm-convert RAW OUT --ray 127.0.0.1:6379` on a cluster of two nodes
of one CPU each started here (tests/ray_cluster.sh, in namespaces of its own: needs root), runs
alternating. Prints each run's frames/s as slarm-convert reports it (from its start to the
dataset in place: joining the cluster and checking its nodes included, starting it not).
Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.convert import make_raw  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))
from slarm.convert.workers import usable_cores  # noqa: E402


def frames_per_s(output: str) -> float:
    found = re.search(r"([\d.]+) frames/s", output)
    if not found:
        raise SystemExit(f"no frames/s in the output:\n{output}")
    return float(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the Ray cluster runs in namespaces of its own: run this as root")
    work = Path(tempfile.mkdtemp(prefix="slarm-bench-ray-", dir="/tmp"))
    try:
        raw = work / "raw" / "bench"
        make_raw(raw, a.episodes, a.frames)
        cores = usable_cores()
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        local, ray = [], []
        for run in range(a.repeat):
            out = work / f"local-{run}"
            r = subprocess.run([sys.executable, "-m", "slarm.convert.cli", str(raw), str(out), "--workers", str(cores)],
                               cwd=ROOT, capture_output=True, text=True, env=env)
            local.append(frames_per_s(r.stdout))
            out = work / f"ray-{run}"
            r = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash",
                                str(ROOT / "tests" / "ray_cluster.sh"), str(work / f"cluster-{run}"),
                                sys.executable, "-m", "slarm.convert.cli", str(raw), str(out), "--ray", "127.0.0.1:6379"],
                               cwd=ROOT, capture_output=True, text=True, env=env)
            ray.append(frames_per_s(r.stdout))
            print(f"run {run + 1}: local {local[-1]:.1f} frames/s, --ray {ray[-1]:.1f} frames/s", flush=True)
        print(f"{a.episodes} episodes x {a.frames} frames, {cores} cores: local --workers {cores} best "
              f"{max(local):.1f} frames/s; --ray (2 nodes x 1 CPU) best {max(ray):.1f} frames/s "
              f"({max(ray) / max(local):.2f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
