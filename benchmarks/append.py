"""Append benchmark: what appending one episode costs, for datasets of growing size.

    .venv/bin/python benchmarks/append.py                      # datasets of 10, 100 and 1000 episodes
    .venv/bin/python benchmarks/append.py --episodes 20,100 --frames 60

Each dataset is built quickly (one episode prepared once, as a worker prepares it, added N - 1
times by slarm-convert's writer, and once more by an append: N episodes of --frames frames,
1920x1080 JPEG -> 256x256 libsvtav1);
then `slarm-convert RAW DATASET` appends one new raw episode of the same length to it, as a user
runs it. Printed for each: the seconds the command took, the bytes it wrote (the kernel's count
for it and its worker processes: /proc/self/io of this process, which takes its children's when
they end), and the peak extra disk (the most the dataset's folder and the work folder beside it
held, during the run, in files other than the dataset's own). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks package

from benchmarks.convert import make_raw  # noqa: E402

from slarm.convert import target as T  # noqa: E402
from slarm.convert import v30  # noqa: E402
from slarm.convert.prepare import prepare_episode  # noqa: E402
from slarm.convert.settings import Settings  # noqa: E402
from slarm.convert.sources import find  # noqa: E402


def base_dataset(root: Path, raw_episode: Path, n: int, work: Path, **file_sizes_in_mb: float) -> None:
    """A slarm v3.0 dataset of `n` episodes at `root`, each a copy of the raw episode at
    `raw_episode` (a file in a raw folder of its own) under a uuid of its own, as slarm-convert
    would have written it after converting n - 1 of them and appending the last: a dataset that
    has been appended to before (the first append to a dataset renumbers its episodes' metadata,
    a few KB an episode, once). Its files are cut at LeRobot's sizes, or at `file_sizes_in_mb`
    (video_files_size_in_mb=..., data_files_size_in_mb=...)."""
    (source,), _, _ = find([raw_episode.parent])
    episode = prepare_episode(source, work / "prepared", Settings(), 1)
    parts = []
    for name, count in (("first", n - 1), ("last", 1)):
        part = work / name
        writer = v30.Writer(part, source, Settings())
        if file_sizes_in_mb:
            writer.dataset.meta.update_chunk_settings(**file_sizes_in_mb)
        for k in range(count):
            videos = {}
            for cam, video in episode.videos.items():  # the writer takes each episode's files away
                videos[cam] = work / "copies" / f"{name}-{k}" / cam / video.name
                videos[cam].parent.mkdir(parents=True)
                os.link(video, videos[cam])
            writer.add(replace(episode, videos=videos))
        writer.finish()
        parts.append(part)
    v30.merge(parts, root)
    entries = [T.episode_entry(str(uuid.uuid4()), f"base/episode_{k:06d}.h5") for k in range(n)]
    T.write_meta(root, Settings().describe(), entries)


def written_bytes() -> int:
    """Bytes this process, and the children it has waited for, caused to be written."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("write_bytes"))


def disk_used(folder: Path, theirs: set[int]) -> int:
    """Bytes of disk taken below `folder` by files (counted once each) other than the inodes `theirs`."""
    seen, used = set(theirs), 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:  # removed meanwhile
                continue
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                used += st.st_blocks * 512
    return used


def inodes(folder: Path) -> set[int]:
    return {p.lstat().st_ino for p in folder.rglob("*") if p.is_file()}


def append(raw: Path, dataset: Path, *options: str, code: Path | None = None) -> tuple[float, int, int]:
    """(seconds, bytes written, peak extra disk) of `slarm-convert RAW DATASET` (as it was in the
    source tree `code`, an older commit's, unpacked: for a comparison)."""
    theirs, peak, done = inodes(dataset), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], disk_used(dataset.parent, theirs))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    before, started = written_bytes(), time.monotonic()
    watcher.start()
    module, env = "slarm.convert.cli", dict(os.environ)
    if code is not None:
        module, env["PYTHONPATH"] = ("slarm.convert.cli" if (code / "src").exists() else "convert.cli"), str(
            code / "src" if (code / "src").exists() else code)
    r = subprocess.run([sys.executable, "-m", module, str(raw), str(dataset), *options], capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, env=env, cwd=code or ROOT)
    seconds = time.monotonic() - started
    done.set()
    watcher.join()
    if r.returncode != 0:
        raise SystemExit(f"slarm-convert failed:\n{r.stdout}{r.stderr}")
    return seconds, written_bytes() - before, peak[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", default="10,100,1000", help="sizes of the datasets appended to")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--reference", metavar="COMMIT", help="also append with slarm-convert as it was at this commit")
    a = ap.parse_args()
    sizes = [int(n) for n in a.episodes.split(",")]
    os.environ.setdefault("SVT_LOG", "1")
    av.logging.set_libav_level(av.logging.ERROR)  # no muxer notes between the figures
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_raw(tmp / "base-raw", 1, a.frames)
        make_raw(tmp / "new-raw", 1, a.frames)
        code = None
        if a.reference:
            code = tmp / "reference"
            code.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", a.reference], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
        print(f"append benchmark: 1 episode of {a.frames} frames appended to a v3.0 dataset of N such episodes")
        print(f"  {'N':>5}  {'dataset':>9}  {'seconds':>7}  {'written':>9}  {'peak extra disk':>15}")
        for n in sizes:
            dataset = tmp / f"datasets-{n}" / "ds"
            base_dataset(dataset, tmp / "base-raw" / "episode_000000.h5", n, tmp / f"work-{n}")
            size = sum(p.stat().st_size for p in dataset.rglob("*") if p.is_file())
            runs = [("now", None)] + ([(a.reference[:10], code)] if code else [])
            for name, tree in runs:
                copy = dataset.parent.with_name(dataset.parent.name + "-" + name) / "ds"
                subprocess.run(["cp", "-a", str(dataset.parent), str(copy.parent)], check=True)
                seconds, written, peak = append(tmp / "new-raw", copy, "--workers", "1", code=tree)
                print(f"  {n:>5}  {size / 1e6:7.1f}MB  {seconds:7.1f}  {written / 1e6:7.1f}MB  {peak / 1e6:13.1f}MB"
                      + (f"  ({name})" if code else ""))
                subprocess.run(["rm", "-rf", str(copy.parent)], check=True)


if __name__ == "__main__":
    main()
