"""Appending to a v3.0 dataset writes what is added, not the whole dataset again: the files LeRobot's
aggregate would copy unchanged are linked (lerobot_private.linked_aggregation), the one file of
each kind that the new episodes extend is rewritten, and the dataset appended to is never written
to. The result is what LeRobot's own aggregate writes."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))  # the benchmarks package
from benchmarks.append import append, base_dataset  # noqa: E402
from benchmarks.convert import make_raw  # noqa: E402

pytestmark = pytest.mark.e2e

FRAMES = 300  # ten seconds at 30 fps: an episode as recorded
# Video files of a few episodes each, as LeRobot's limit (200 MB) makes them once a dataset is
# large; data files of tens of episodes, and (LeRobot's writer cuts them at the data file size
# too) one file of episode metadata: LeRobot's aggregate cannot read back a dataset it made from
# one with several, whichever way it copies files.
SMALL_FILES_MB = {"video_files_size_in_mb": 1.0, "data_files_size_in_mb": 1.0}


@pytest.fixture(scope="module")
def raws(tmp_path_factory) -> tuple[Path, Path]:
    """(one raw episode for the datasets' episodes, one new raw episode to append)."""
    folder = tmp_path_factory.mktemp("raws")
    make_raw(folder / "base", 1, FRAMES)
    make_raw(folder / "new", 1, FRAMES)
    return folder / "base" / "episode_000000.h5", folder / "new"


def small_files_dataset(root: Path, raw_episode: Path, n: int, work: Path) -> Path:
    base_dataset(root, raw_episode, n, work, **SMALL_FILES_MB)
    assert json.loads((root / "meta" / "info.json").read_text())["video_files_size_in_mb"] == 1.0
    return root


def test_appending_one_episode_costs_the_same_for_20_and_100_episodes(raws, tmp_path):
    """With files of a few episodes each, as LeRobot's file size limits make them once a dataset
    is large, appending writes and needs about the same whatever the dataset holds."""
    figures = {}
    for n in (20, 100):
        dataset = small_files_dataset(tmp_path / f"d{n}" / "ds", raws[0], n, tmp_path / f"w{n}")
        assert len(list((dataset / "videos").rglob("*.mp4"))) >= 4, "several video files"
        seconds, written, peak = append(raws[1], dataset, "--workers", "1")
        figures[n] = written, peak
    (w20, p20), (w100, p100) = figures[20], figures[100]
    assert w100 <= 1.5 * w20, f"bytes written: {w20} for 20 episodes, {w100} for 100"
    assert p100 <= 1.5 * p20, f"peak extra disk: {p20} for 20 episodes, {p100} for 100"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("n, small", [(3, False), (12, True)], ids=["one-file-each", "several-files"])
def test_a_linked_append_is_what_lerobots_aggregate_writes_and_leaves_the_old_dataset_alone(raws, tmp_path, n, small):
    from slarm.convert import v30

    old, new = tmp_path / "old", tmp_path / "new"
    if small:
        small_files_dataset(old, raws[0], n, tmp_path / "w-old")
        small_files_dataset(new, raws[1] / "episode_000000.h5", 2, tmp_path / "w-new")
    else:
        base_dataset(old, raws[0], n, tmp_path / "w-old")
        base_dataset(new, raws[1] / "episode_000000.h5", 2, tmp_path / "w-new")
    before = {p.relative_to(old): digest(p) for p in old.rglob("*") if p.is_file()}
    v30.merge([old, new], tmp_path / "linked")
    v30.merge([old, new], tmp_path / "copied", linked=False)
    assert {p.relative_to(old): digest(p) for p in old.rglob("*") if p.is_file()} == before, "old dataset untouched"

    linked, copied = tmp_path / "linked", tmp_path / "copied"
    files = sorted(p.relative_to(copied) for p in copied.rglob("*") if p.is_file())
    assert sorted(p.relative_to(linked) for p in linked.rglob("*") if p.is_file()) == files, "the same file layout"
    shared = 0
    for f in files:
        if f.suffix == ".parquet":  # linked data files are the old dataset's own, as LeRobot's writer wrote them
            pd.testing.assert_frame_equal(pd.read_parquet(linked / f), pd.read_parquet(copied / f), obj=str(f))
        else:
            assert digest(linked / f) == digest(copied / f), f
        shared += (linked / f).stat().st_nlink > 1
    if small:  # with one file of each kind, each is extended: nothing stays as it was
        assert shared >= 4, "the files that do not change are links to the old dataset's"

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from slarm.lerobot_private import in_memory_reads

    with in_memory_reads():  # as slarm-convert verifies
        a = LeRobotDataset("local/a", root=linked, video_backend="pyav")
    b = LeRobotDataset("local/b", root=copied, video_backend="pyav")  # as a user reads it
    assert a.hf_dataset.with_format("arrow")[:].equals(b.hf_dataset.with_format("arrow")[:])
    assert a.meta.episodes.with_format("arrow")[:].equals(b.meta.episodes.with_format("arrow")[:])
    assert a.num_episodes == b.num_episodes == n + 2 and len(a) == len(b)
    for i in (0, len(a) // 2, len(a) - 1):
        x, y = a[i], b[i]
        for key in x:
            if hasattr(x[key], "shape"):
                assert (x[key] == y[key]).all(), (i, key)


def v21_dataset(root: Path, raw_episode: Path, n: int, work: Path) -> Path:
    """A slarm v2.1 dataset of `n` copies of one episode (each under a uuid of its own)."""
    import uuid

    from slarm.convert import target as T
    from slarm.convert import v21
    from slarm.convert.settings import Settings
    from slarm.convert.sources import find

    settings = Settings(format="v2.1")
    (source,), _, _ = find([raw_episode.parent])
    v21.write_episode(source, work / "one", settings)
    v21.merge([work / "one"] * n, root)
    T.write_meta(root, settings.describe(), [T.episode_entry(str(uuid.uuid4()), f"base/e{k}.h5") for k in range(n)])
    return root


def test_appending_to_a_v21_dataset_costs_the_same_for_20_and_100_episodes(raws, tmp_path):
    """v2.1 keeps one file per episode: the existing ones are linked, the metadata lists rewritten."""
    figures = {}
    for n in (20, 100):
        dataset = v21_dataset(tmp_path / f"d{n}" / "ds", raws[0], n, tmp_path / f"w{n}")
        first = next((dataset / "data").rglob("episode_000000.parquet"))
        inode = first.stat().st_ino
        figures[n] = append(raws[1], dataset, "--workers", "1", "--format", "v2.1")
        assert next((dataset / "data").rglob("episode_000000.parquet")).stat().st_ino == inode, "linked, not rewritten"
    (_, w20, p20), (_, w100, p100) = figures[20], figures[100]
    assert w100 <= 1.5 * w20, f"bytes written: {w20} for 20 episodes, {w100} for 100"
    assert p100 <= 1.5 * p20, f"peak extra disk: {p20} for 20 episodes, {p100} for 100"
