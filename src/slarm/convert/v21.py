"""Write LeRobot v2.1 datasets: the layout OpenPI's pinned LeRobot reads.

LeRobot 0.6 reads and writes only v3.0, so these files are written here, in the layout
LeRobot 0.3.3 (the last release that reads v2.1) writes and reads:

    data/chunk-000/episode_000000.parquet   one file per episode, images embedded as JPEG bytes
    meta/info.json                          codebase_version "v2.1", features, totals, paths
    meta/episodes.jsonl  meta/episodes_stats.jsonl  meta/tasks.jsonl

As for v3.0, each raw episode is converted on its own (a one-episode dataset, in a worker
process) and `merge` puts datasets together in order, renumbering episodes, frames and tasks.
The parquet schema carries the Hugging Face `datasets` feature types in their 3.x spelling
(Sequence, Image), which `datasets` 3.x (LeRobot 0.3.3) and 4.x (LeRobot 0.6) both read.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .features import features
from .prepare import Converted, EpisodeFrames
from .settings import Settings
from .sources import Source
from .stats import image_stats, normalized

CODEBASE_VERSION = "v2.1"
CHUNK_SIZE = 1000
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
def write_episode(src: Source, root: Path, s: Settings, encoder_threads: int | None = None,
                  stopped: Callable[[], bool] = lambda: False) -> Converted:
    """Convert one raw episode into a one-episode v2.1 dataset at `root`. Runs in a worker process,
    which checks `stopped` between frames."""
    with EpisodeFrames(src, s, stopped) as ep:
        jpegs: dict[str, list] = {cam: [] for cam in ep.cameras}
        last: dict[str, tuple[np.ndarray, bytes]] = {}
        for images in ep:
            for cam, image in images.items():
                if cam not in last or last[cam][0] is not image:  # a frame shown again reuses its JPEG
                    last[cam] = (image, _jpeg(image, s.jpeg_quality))
                jpegs[cam].append({"bytes": last[cam][1], "path": None})
        columns: dict[str, list | np.ndarray] = {"observation.state": ep.state, "action": ep.action}
        for cam in ep.cameras:
            columns[f"observation.images.{cam}"] = jpegs[cam]
        columns.update(_index_columns(ep.frames, src.fps))
        feats = features(src, s)
        table = _table(columns, feats)
        ep_stats = _column_stats(table, feats)
        for cam in ep.cameras:
            ep_stats[f"observation.images.{cam}"] = normalized(image_stats(ep.histograms[cam]))
        path = root / DATA_PATH.format(episode_chunk=0, episode_index=0)
        path.parent.mkdir(parents=True)
        pq.write_table(table, path)
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": ep.raw.attrs.get("robot_type"), "fps": src.fps,
                "chunks_size": CHUNK_SIZE, "data_path": DATA_PATH, "video_path": None, "features": feats}
        episode = {"episode_index": 0, "tasks": [ep.task], "length": ep.frames}
        _write_meta(root, info, [ep.task], [(episode, _serialize(ep_stats))])
        return ep.converted()


def merge(roots: list[Path], out: Path) -> None:
    """v2.1 datasets at `roots`, in order, into a new dataset at `out`: episodes, frames and
    tasks renumbered; a file whose numbers do not change is hard-linked (or copied), not rewritten."""
    info = None
    tasks: list[str] = []
    episodes = []  # (source parquet, tasks, length, stats, new episode index, first frame index)
    total = 0
    for root in roots:
        theirs = json.loads((root / "meta/info.json").read_text())
        info = info or theirs
        their_tasks = {t["task_index"]: t["task"] for t in _jsonl(root / "meta/tasks.jsonl")}
        their_stats = {e["episode_index"]: e["stats"] for e in _jsonl(root / "meta/episodes_stats.jsonl")}
        for task in their_tasks.values():
            if task not in tasks:
                tasks.append(task)
        for e in sorted(_jsonl(root / "meta/episodes.jsonl"), key=lambda e: e["episode_index"]):
            i = e["episode_index"]
            path = root / theirs["data_path"].format(episode_chunk=i // theirs["chunks_size"], episode_index=i)
            episodes.append((path, their_tasks, e, their_stats[i], len(episodes), total))
            total += e["length"]
    out.mkdir(parents=True, exist_ok=True)
    meta_eps = []
    for path, their_tasks, e, stats, new_index, first in episodes:
        dest = out / DATA_PATH.format(episode_chunk=new_index // CHUNK_SIZE, episode_index=new_index)
        dest.parent.mkdir(parents=True, exist_ok=True)
        table = pq.read_table(path)
        task_map = {k: tasks.index(v) for k, v in their_tasks.items()}
        old = table.column("task_index").to_numpy()
        new_tasks = np.array([task_map[int(t)] for t in old], dtype=np.int64)
        if (table.column("episode_index")[0].as_py() == new_index and table.column("index")[0].as_py() == first
                and np.array_equal(old, new_tasks)):
            _link_or_copy(path, dest)
        else:
            for name, values in (("episode_index", np.full(len(old), new_index, np.int64)),
                                 ("index", np.arange(first, first + len(old), dtype=np.int64)),
                                 ("task_index", new_tasks)):
                table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
            stats = {**stats, **_serialize(_column_stats(table, info["features"], only=("episode_index", "index",
                                                                                         "task_index")))}
            pq.write_table(table, dest)
        meta_eps.append(({"episode_index": new_index, "tasks": e["tasks"], "length": e["length"]}, stats))
    _write_meta(out, info, tasks, meta_eps)


def verify(root: Path, episodes: int, frames: int, camera_keys: list[str], new: int | None = None) -> None:
    """Read the dataset back: totals, every episode's file and numbering, one decoded image per
    camera. `new` is not needed: reading the index columns of every file writes nothing."""
    info = json.loads((root / "meta/info.json").read_text())
    if (info["total_episodes"], info["total_frames"]) != (episodes, frames):
        raise RuntimeError(f"expected {episodes} episodes / {frames} frames, info.json says "
                           f"{info['total_episodes']} / {info['total_frames']}")
    index = 0
    eps = sorted(_jsonl(root / "meta/episodes.jsonl"), key=lambda e: e["episode_index"])
    for e in eps:
        i = e["episode_index"]
        path = root / info["data_path"].format(episode_chunk=i // info["chunks_size"], episode_index=i)
        t = pq.read_table(path, columns=list(INDEX_COLUMNS))
        frame_index = t.column("frame_index").to_numpy()
        if (len(t) != e["length"] or not np.array_equal(frame_index, np.arange(len(t)))
                or not np.allclose(t.column("timestamp").to_numpy(), frame_index / info["fps"], atol=1e-4)
                or set(t.column("episode_index").to_numpy()) != {i} or t.column("index")[0].as_py() != index):
            raise RuntimeError(f"{path.name}: frame numbering or timestamps are not consecutive")
        index += len(t)
    if index != frames or len(eps) != episodes:
        raise RuntimeError(f"episodes.jsonl lists {len(eps)} episodes / {index} frames")
    last = pq.read_table(path, columns=camera_keys).slice(len(t) - 1)
    for key in camera_keys:
        jpeg = last.column(key)[0].as_py()["bytes"]
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        h, w = info["features"][key]["shape"][:2]
        if img is None or img.shape != (h, w, 3):
            raise RuntimeError(f"{key}: the last frame's image does not decode to {w}x{h}")


# --- files ------------------------------------------------------------------------------

def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _index_columns(n: int, fps: int) -> dict:
    """LeRobot's index columns of a dataset's first (and only) episode; merge renumbers them."""
    frame_index = np.arange(n, dtype=np.int64)
    return {"timestamp": (frame_index / fps).astype(np.float32), "frame_index": frame_index,
            "episode_index": np.zeros(n, np.int64), "index": frame_index, "task_index": np.zeros(n, np.int64)}


def _hf_type(ft: dict) -> tuple[pa.DataType, dict]:
    """Arrow type and `datasets` feature (3.x spelling) of one LeRobot feature."""
    if ft["dtype"] == "image":
        return pa.struct({"bytes": pa.binary(), "path": pa.string()}), {"_type": "Image"}
    value = {"dtype": ft["dtype"], "_type": "Value"}
    arrow = pa.from_numpy_dtype(np.dtype(ft["dtype"]))
    if list(ft["shape"]) == [1]:
        return arrow, value
    return pa.list_(arrow, ft["shape"][0]), {"feature": value, "length": ft["shape"][0], "_type": "Sequence"}


def _table(columns: dict, feats: dict) -> pa.Table:
    arrays, fields, hf = [], [], {}
    for key, ft in feats.items():
        arrow, hf[key] = _hf_type(ft)
        values = columns[key]
        if isinstance(values, np.ndarray) and values.ndim == 2:
            values = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        arrays.append(pa.array(values, type=arrow) if not isinstance(values, pa.Array) else values)
        fields.append(pa.field(key, arrow))
    schema = pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": hf}})})
    return pa.Table.from_arrays(arrays, schema=schema)


def _column_stats(table: pa.Table, feats: dict, only: tuple[str, ...] | None = None) -> dict:
    """LeRobot's per-episode stats of the numeric columns (state, action, timestamp, indices)."""
    from lerobot.datasets.compute_stats import compute_episode_stats

    keys = [k for k, ft in feats.items() if ft["dtype"] != "image" and (only is None or k in only)]
    data = {}
    for k in keys:
        col = table.column(k).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            data[k] = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
        else:
            data[k] = col.to_numpy()
    return compute_episode_stats(data, {k: feats[k] for k in keys})


def _serialize(stats: dict) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items() if d is not None}


def _write_meta(root: Path, info: dict, tasks: list[str], episodes: list[tuple[dict, dict]]) -> None:
    """meta/: info.json with its totals counted from `episodes` ((episodes.jsonl line, stats) in order)."""
    n = len(episodes)
    counted = {"codebase_version": info["codebase_version"], "robot_type": info.get("robot_type"),
               "total_episodes": n, "total_frames": sum(e["length"] for e, _ in episodes), "total_tasks": len(tasks),
               "total_videos": 0, "total_chunks": (n - 1) // CHUNK_SIZE + 1 if n else 0, "splits": {"train": f"0:{n}"}}
    info = {**counted, **{k: v for k, v in info.items() if k not in counted}}  # LeRobot's key order
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "info.json").write_text(json.dumps(info, indent=4, ensure_ascii=False))
    _write_jsonl(meta / "tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(tasks)])
    _write_jsonl(meta / "episodes.jsonl", [e for e, _ in episodes])
    _write_jsonl(meta / "episodes_stats.jsonl", [{"episode_index": e["episode_index"], "stats": s}
                                                   for e, s in episodes])


def _write_jsonl(path: Path, items: list[dict]) -> None:
    path.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)
