"""Convert benchmark: slarm-convert vs the spec's straightforward loop, on the same raw episodes.

    .venv/bin/python benchmarks/convert.py                       # 20 episodes x 300 frames
    .venv/bin/python benchmarks/convert.py --episodes 4 --frames 150
    .venv/bin/python benchmarks/convert.py --workers 1,2 --no-baseline   # frames/s by workers
    .venv/bin/python benchmarks/convert.py --device cuda --workers 1,4,8,16 --no-baseline   # on a GPU machine

Raw episodes are made directly in the raw format (1920x1080 JPEG frames of realistic
content, about 250-300 KB each, from the simulated camera) so the benchmark does not
wait for real-time capture. Then, on the same episodes:
- slarm-convert RAW DATASET (workers decode at reduced DCT scale, resize and encode while the
  main process imports LeRobot, whose writer then adds the episodes; --workers = cores);
- the straightforward approach of the recording spec: full-size decode, resize, add_frame,
  save_episode, one process (LeRobot writes PNG images, then encodes the video).
Each is run --repeat times (default 2), alternately, each run a fresh process, on the same
files; this machine's timings vary by 10 % or more from run to run, so every run is printed
and the ratio is taken between the best run of each. Prints frames/s of both and their ratio,
and for each best run its CPU time per frame (all its processes) and how many cores that kept
busy on average: how much of the ratio is less work per frame, how much is more cores at work.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slarm.capture.cameras import Frame  # noqa: E402
from slarm.capture.sim.camera_server import encoded_frames  # noqa: E402
from slarm.convert.workers import usable_cores  # noqa: E402
from slarm.raw import CameraInfo, EpisodeWriter, Tick, open_episode  # noqa: E402

NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def make_raw(folder: Path, episodes: int, frames: int, fps: int = 30, camera_fps: int = 30) -> None:
    """Episodes of `frames` ticks at `fps`, from a camera giving `camera_fps` new frames a second
    (below fps: a tick without a new frame shows the one before again, as in slarm-capture's files)."""
    jpegs = encoded_frames(1920, 1080)
    folder.mkdir(parents=True)
    for e in range(episodes):
        w = EpisodeWriter(
            folder / f"episode_{e:06d}.h5",
            attrs={"fps": fps, "task": "pick up the red cube", "robot_type": "so101", "robot_id": "bench",
                   "state_source": "benchmark", "episode_uuid": str(uuid.uuid4()), "start_time": "",
                   "calibration": {}, "software": {}},
            state_names=NAMES, state_attrs={"units": "rad"},
            cameras=[CameraInfo("wrist", 1920, 1080, fps, "jpeg", "benchmark", "0")],
        )
        for k in range(frames):
            t = k / fps
            state = np.sin(np.arange(6) + t).astype(np.float32)
            seq = k * camera_fps // fps
            w.put(Tick(k, t, state, {"wrist": Frame(jpegs[(e * 7 + seq) % len(jpegs)], seq, seq / camera_fps)}))
        w.save()


def straightforward(raw: Path, out: Path, size: int = 256) -> int:
    """The recording spec's approach, kept as plain as it describes."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.state": {"dtype": "float32", "shape": (6,), "names": NAMES},
        "action": {"dtype": "float32", "shape": (6,), "names": NAMES},
        "observation.images.wrist": {"dtype": "video", "shape": (size, size, 3), "names": ["height", "width", "channels"]},
    }
    ds = LeRobotDataset.create("local/straightforward", fps=30, features=features, root=out, robot_type="so101",
                               video_backend="pyav")
    n = 0
    for path in sorted(raw.glob("*.h5")):
        with open_episode(path) as ep:
            for i in range(ep.frame_count):
                bgr = cv2.imdecode(np.frombuffer(ep.frame("wrist", i), np.uint8), cv2.IMREAD_COLOR)
                rgb = cv2.cvtColor(cv2.resize(bgr, (size, size)), cv2.COLOR_BGR2RGB)
                ds.add_frame({"observation.state": ep.state[i], "action": ep.state[i],
                              "observation.images.wrist": rgb, "task": ep.task})
                n += 1
        ds.save_episode()
    ds.finalize()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--workers", default=str(usable_cores()), help="comma-separated worker counts to time")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--codec", default="libsvtav1", help="slarm-convert's --codec (the baseline: LeRobot's default)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the straightforward approach")
    ap.add_argument("--straightforward", nargs=2, metavar=("RAW", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each, alternately; the best counts")
    ap.add_argument("--camera-fps", type=int, default=30, help="new camera frames per second (ticks: 30 fps)")
    a = ap.parse_args()
    os.environ.setdefault("SVT_LOG", "1")
    if a.straightforward:  # one run of the plain loop, in a process of its own
        straightforward(*map(Path, a.straightforward))
        return
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        make_raw(raw, a.episodes, a.frames, camera_fps=a.camera_fps)
        os.sync()  # neither run should pay for writing back the files just made
        n = a.episodes * a.frames
        mb = sum(p.stat().st_size for p in raw.glob("*.h5")) / 1e6

        timings: dict[int, list[Run]] = {int(w): [] for w in a.workers.split(",")}
        plain: list[Run] = []
        for _ in range(a.repeat):
            for workers, runs in timings.items():
                out = Path(tmp) / f"slarm-{workers}"
                shutil.rmtree(out, ignore_errors=True)
                runs.append(timed([sys.executable, "-m", "slarm.convert.cli", str(raw), str(out), "--workers", str(workers),
                                   "--device", a.device, "--codec", a.codec]))
            if not a.no_baseline:
                out = Path(tmp) / "straightforward"
                shutil.rmtree(out, ignore_errors=True)
                # a fresh process too, which imports LeRobot as slarm-convert does
                plain.append(timed([sys.executable, __file__, "--straightforward", str(raw), str(out)]))

    print(f"convert benchmark: {a.episodes} episodes x {a.frames} frames of 1920x1080 JPEG "
          f"({mb / n * 1000:.0f} KB/frame, camera at {a.camera_fps} fps) -> 256x256 LeRobot v3.0 ({a.codec}), "
          f"{usable_cores()} cores, --device {a.device}")
    for workers, runs in timings.items():
        print(f"  slarm-convert      {_figures(runs, n)}; workers = {workers})")
    if not a.no_baseline:
        print(f"  straightforward    {_figures(plain, n)}; full decode + resize + add_frame, 1 process)")
        plain_best, slarm_best = min(plain), min(min(r) for r in timings.values())
        print(f"  ratio              {plain_best.wall / slarm_best.wall:7.2f}x  (best runs)")
        print(f"  CPU per frame      {plain_best.cpu / slarm_best.cpu:7.2f}x less for slarm-convert, on "
              f"{slarm_best.busy / plain_best.busy:.2f}x the cores busy (best runs)")


@dataclass(order=True)
class Run:
    wall: float  # seconds
    cpu: float  # user + system seconds of the command's processes, its workers included

    @property
    def busy(self) -> float:
        """The cores kept busy, on average."""
        return self.cpu / self.wall


def timed(command: list[str]) -> Run:
    """Run a command from the project's folder; exits with its output if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    r = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # once reaped, a worker's CPU is its parent's
    if r.returncode != 0:
        sys.exit(r.stdout + r.stderr)
    return Run(wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


def _figures(runs: list[Run], frames: int) -> str:
    best = min(runs)
    return (f"{frames / best.wall:7.1f} frames/s  (best {best.wall:.1f} s of {', '.join(f'{r.wall:.1f}' for r in runs)} s; "
            f"CPU {best.cpu / frames * 1000:.1f} ms/frame, {best.busy:.2f} cores busy")


if __name__ == "__main__":
    main()
