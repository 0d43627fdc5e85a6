"""Writer benchmark: what adding many episodes to one LeRobot v3.0 dataset costs slarm-convert's
main process, with LeRobot's writer appending each episode's video to the video file as it
comes (a remux of the whole file each time), and as slarm-convert does it (slarm/convert/v30.py:
each file joined once).

    .venv/bin/python benchmarks/writer.py                  # 200 episodes of 300 frames
    .venv/bin/python benchmarks/writer.py --episodes 50

One 300-frame episode (1920x1080 JPEG from the simulated camera -> 256x256 libsvtav1) is
prepared once, as a worker prepares it; then each writer adds it --episodes times to a dataset
of its own, in this process. Prints the CPU time and wall time of each, the video files
written, and whether the two datasets are the same bytes. Asserts nothing.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the convert package, not benchmarks/convert.py

from benchmarks.convert import make_raw  # noqa: E402

from slarm.convert import v30  # noqa: E402
from slarm.convert.prepare import prepare_episode  # noqa: E402
from slarm.convert.settings import Settings  # noqa: E402
from slarm.convert.sources import find  # noqa: E402


def write(root: Path, source, episode, copies: Path, n: int, lerobots_appends: bool) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of adding `episode` n times and finishing the dataset."""
    writer = v30.Writer(root, source, Settings(), join_videos_once=not lerobots_appends)
    cpu, wall = _cpu(), time.monotonic()
    for k in range(n):
        videos = {}
        for cam, video in episode.videos.items():  # the writer takes each episode's files away
            videos[cam] = copies / str(k) / cam / video.name
            videos[cam].parent.mkdir(parents=True)
            os.link(video, videos[cam])
        writer.add(replace(episode, videos=videos))
    writer.finish()
    return _cpu() - cpu, time.monotonic() - wall


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return names == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and \
        all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--frames", type=int, default=300)
    a = ap.parse_args()
    os.environ.setdefault("SVT_LOG", "1")
    av.logging.set_libav_level(av.logging.ERROR)  # no muxer notes between the figures
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_raw(tmp / "raw", 1, a.frames)
        (source,), _, _ = find([tmp / "raw"])
        episode = prepare_episode(source, tmp / "prepared", Settings(), 1)
        mb = sum(p.stat().st_size for p in episode.videos.values()) / 1e6
        ours = write(tmp / "ours", source, episode, tmp / "copies-ours", a.episodes, False)
        lerobots = write(tmp / "lerobot", source, episode, tmp / "copies-lerobot", a.episodes, True)
        files = len(list((tmp / "ours" / "videos").rglob("*.mp4")))
        same = _same_files(tmp / "ours", tmp / "lerobot")

    print(f"writer benchmark: {a.episodes} episodes x {a.frames} frames ({mb:.2f} MB of video each) "
          f"-> one v3.0 dataset, {files} video file(s)")
    print(f"  LeRobot's appends    CPU {lerobots[0]:6.1f} s   wall {lerobots[1]:6.1f} s")
    print(f"  slarm-convert        CPU {ours[0]:6.1f} s   wall {ours[1]:6.1f} s")
    print(f"  same bytes           {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
