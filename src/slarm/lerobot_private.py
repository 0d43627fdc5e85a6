"""Every use of LeRobot's private internals, in one place.

LeRobot releases often and these names are not its public API. Each hook below checks, when
used, that the names it relies on are there with the parameters it passes (`_require`), and
raises LeRobotChanged naming the hook otherwise: no silent fallback to something slower or
different. tests/test_lerobot_private.py checks every hook's names and behaviour against the
installed LeRobot, and fails naming the hook when LeRobot changes.

    hook                           LeRobot internals                       what it buys
    dataset_taking_encoded_videos  LeRobotDataset._build_streaming_encoder, videos encoded in parallel
                                   StreamingVideoEncoder.finish_episode,   worker processes, handed to
                                   ._rgb_encoder                           LeRobot's own writer
    VideoAppends                   dataset_writer.concatenate_video_files, each video file joined once,
                                   dataset_writer.get_file_size_in_mb      not remuxed at every episode
    skip_embedding_without_images  dataset_writer.embed_images             no row-by-row map over tables
                                                                           that hold no images
    quantile_stats                 RunningQuantileStats's _count, _min,    image stats from pixel-value
                                   _max, _mean, _mean_of_squares,          counts: LeRobot's quantiles
                                   _bin_edges, _histograms,                to the bit, without keeping
                                   _num_quantile_bins                      the frames
    release_port                   port_handler.is_using (Feetech SDK)     the arm reconnects after a
                                                                           read cut off by a fault
    linked_aggregation             aggregate.shutil.copy,                  appending writes the new
                                   aggregate.append_or_create_parquet_file, episodes and the files they
                                   aggregate.concatenate_video_files       extend, not the whole dataset
    in_memory_reads                io_utils.load_nested_dataset,           reading a dataset back writes
                                   dataset_reader.load_nested_dataset      no Arrow copy of its tables
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np

HOOKS = ("dataset_taking_encoded_videos", "VideoAppends", "skip_embedding_without_images", "quantile_stats",
         "release_port", "linked_aggregation", "in_memory_reads")


class LeRobotChanged(RuntimeError):
    """The installed LeRobot lacks an internal slarm relies on, or has changed it."""


def _lerobot_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lerobot")
    except PackageNotFoundError:
        return "?"


def _changed(hook: str, what: str) -> LeRobotChanged:
    return LeRobotChanged(f"LeRobot {_lerobot_version()} changed what slarm's hook '{hook}' relies on: {what}. "
                          "This slarm needs the LeRobot version its pyproject.toml names; install that one, or "
                          "update slarm (src/slarm/lerobot_private.py)")


def _require(hook: str, module: str, names: dict[str, tuple[str, ...]]):
    """The module `module`, having checked that each of `names` is in it and takes the named
    parameters (in that order, first). Raises LeRobotChanged naming `hook` otherwise."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise _changed(hook, f"no module {module} ({e})") from None
    for name, params in names.items():
        _require_callable(hook, f"{module}.{name}", getattr(mod, name, None), params)
    return mod


def _require_callable(hook: str, where: str, obj, params: tuple[str, ...]) -> None:
    if obj is None or not callable(obj):
        raise _changed(hook, f"{where} is gone")
    if params:
        have = [p for p in inspect.signature(obj).parameters if p != "self"]
        if have[:len(params)] != list(params):
            raise _changed(hook, f"{where} takes ({', '.join(have)}), not ({', '.join(params)}, ...)")


def _require_attributes(hook: str, where: str, obj, names: tuple[str, ...]) -> None:
    missing = [n for n in names if not hasattr(obj, n)]
    if missing:
        raise _changed(hook, f"{where} has no {', '.join(missing)}")


# --- the v3.0 writer ------------------------------------------------------------------------

def dataset_taking_encoded_videos(root: Path, repo_id: str, fps: int, features: dict, robot_type: str | None,
                                  codec: str):
    """(encoded, dataset): a new LeRobotDataset at `root` whose streaming-encoding writer takes
    each episode's videos from `encoded.videos` ({video key: (MP4 path, image stats)}), set
    before each save_episode, instead of encoding frames itself."""
    hook = "dataset_taking_encoded_videos"
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    video_utils = _require(hook, "lerobot.datasets.video_utils", {"StreamingVideoEncoder": ()})
    _require_callable(hook, "LeRobotDataset._build_streaming_encoder",
                      getattr(LeRobotDataset, "_build_streaming_encoder", None), ())
    _require_callable(hook, "StreamingVideoEncoder.finish_episode",
                      getattr(video_utils.StreamingVideoEncoder, "finish_episode", None), ())

    class Encoded(video_utils.StreamingVideoEncoder):
        """The streaming-encoder hook of LeRobot's writer, handing over videos encoded by a worker."""

        videos: dict = {}

        def finish_episode(self):
            return self.videos

    encoded = Encoded(fps, RGBEncoderConfig(vcodec=codec))
    _require_attributes(hook, "StreamingVideoEncoder", encoded, ("_rgb_encoder",))

    class Dataset(LeRobotDataset):
        _build_streaming_encoder = staticmethod(lambda *args: encoded)

    dataset = Dataset.create(repo_id=repo_id, fps=fps, features=features, root=root, robot_type=robot_type,
                             use_videos=True, rgb_encoder=encoded._rgb_encoder, streaming_encoding=True,
                             video_backend="pyav")
    return encoded, dataset


class VideoAppends:
    """LeRobot's writer appends each episode's video to the current video file of its camera with
    concatenate_video_files([file, episode], file), which remuxes the whole file: N episodes in
    one file remux N²/2 episodes' packets, in the one process that writes the dataset while the
    workers wait for it (docs/benchmarks.md, "Video file joins"). Inside `with` (around each save_episode), those appends
    are collected, and each file gets them at flush(), with LeRobot's concatenate_video_files: all
    but the last in one call, then the last, as LeRobot's writer appends it. The same bytes as
    LeRobot's writer writes: the concat demuxer offsets each input by the durations before it
    either way, and the MP4 header's max bit rate is taken from the first input, here too the
    file of all but the last episode (tests/test_lerobot_private.py compares the two writers' files
    byte for byte).

    LeRobot starts a new file when file size + episode size would reach its video file size
    limit; for a file with appends waiting, the size it is told is the file's plus theirs (a
    little more than the joined file: each part carries its own MP4 header), and when that could
    reach the limit with the episode being added, the appends are made first and it is told the
    real size. So every file ends with the episode it would end with in LeRobot's own writer."""

    def __init__(self, folder: Path, limit_mb, enabled: bool = True):
        self.module = _require("VideoAppends", "lerobot.datasets.dataset_writer",
                               {"concatenate_video_files": ("input_video_paths", "output_video_path"),
                                "get_file_size_in_mb": ("file_path",)})
        self.folder, self.limit_mb = folder, limit_mb
        self.concatenate = self.module.concatenate_video_files
        self.size_in_mb = self.module.get_file_size_in_mb
        self.enabled = enabled  # off: LeRobot's own appends, to compare
        self.waiting: dict[Path, list[Path]] = {}  # video file -> episode videos to append, in order
        self.next_episode_mb = 0.0  # the largest video of the episode being added (Writer.add)
        self.held = 0

    def __enter__(self) -> VideoAppends:
        """Until the block ends, however it ends, collect the writer's appends."""
        if self.enabled:
            self.module.concatenate_video_files, self.module.get_file_size_in_mb = self._append_later, self._size_in_mb
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.module.concatenate_video_files, self.module.get_file_size_in_mb = self.concatenate, self.size_in_mb

    def flush(self, file: Path | None = None) -> None:
        """Make the appends waiting for `file` (all files: None)."""
        for f in [file] if file is not None else list(self.waiting):
            episodes = self.waiting.pop(f, [])
            if len(episodes) > 1:
                self.concatenate([f, *episodes[:-1]], f)
            if episodes:  # the last one on its own, as LeRobot appends it: the MP4 header's max
                self.concatenate([f, episodes[-1]], f)  # bit rate comes from the first input's
            for e in episodes:
                e.unlink()

    def _append_later(self, inputs, output, *args, **kwargs) -> None:
        inputs, output = [Path(p) for p in inputs], Path(output)
        if len(inputs) != 2 or inputs[0] != output or args or kwargs:  # not the writer's append: now
            for f in {output, *inputs}:
                self.flush(f)
            self.concatenate(inputs, output, *args, **kwargs)
            return
        self.folder.mkdir(exist_ok=True)
        held = self.folder / f"{self.held}{inputs[1].suffix}"  # the writer deletes the episode's folder next
        os.replace(inputs[1], held)
        self.held += 1
        self.waiting.setdefault(output, []).append(held)

    def _size_in_mb(self, path) -> float:
        path = Path(path)
        episodes = self.waiting.get(path)
        if not episodes:
            return self.size_in_mb(path)
        estimate = self.size_in_mb(path) + sum(self.size_in_mb(e) for e in episodes)
        if estimate + self.next_episode_mb >= self.limit_mb():
            self.flush(path)
            return self.size_in_mb(path)
        return estimate


def skip_embedding_without_images() -> None:
    """LeRobot's save_episode passes every episode's table through embed_images, a row-by-row
    datasets.map that embeds image and audio files; for a table without such columns (state,
    action, indices: the videos are separate files) it returns the same table, at a cost that
    grows with every frame. Skip the map then; otherwise LeRobot's embed_images runs as before."""
    from datasets.features.features import require_storage_embed

    dataset_writer = _require("skip_embedding_without_images", "lerobot.datasets.dataset_writer", {"embed_images": ("dataset",)})
    embed_images = dataset_writer.embed_images
    if getattr(embed_images, "only_when_needed", False):
        return

    def embed_when_needed(dataset):
        if any(require_storage_embed(feature) for feature in dataset.features.values()):
            return embed_images(dataset)
        return dataset

    embed_when_needed.only_when_needed = True
    dataset_writer.embed_images = embed_when_needed


# --- image stats ----------------------------------------------------------------------------

def quantile_stats(counts: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's RunningQuantileStats.get_statistics() for pixels whose values (0..255) per
    channel are counted in `counts` (C, 256), as if it had been fed every pixel."""
    hook = "quantile_stats"
    module = _require(hook, "lerobot.datasets.compute_stats", {"RunningQuantileStats": ()})
    running = module.RunningQuantileStats()
    _require_attributes(hook, "RunningQuantileStats", running,
                        ("_count", "_min", "_max", "_mean", "_mean_of_squares", "_bin_edges", "_histograms",
                         "_num_quantile_bins", "get_statistics"))
    values = np.arange(256, dtype=np.float64)
    pixels = int(counts[0].sum())
    running._count = pixels
    # min, max, mean, mean of squares: float32, as LeRobot keeps them for uint8 pixels
    running._min = np.array([values[c > 0][0] for c in counts], np.float32)
    running._max = np.array([values[c > 0][-1] for c in counts], np.float32)
    running._mean = ((counts * values).sum(axis=1) / pixels).astype(np.float32)
    running._mean_of_squares = ((counts * values**2).sum(axis=1) / pixels).astype(np.float32)
    running._bin_edges, running._histograms = [], []
    for c, channel in enumerate(counts):
        edges = np.linspace(running._min[c] - 1e-10, running._max[c] + 1e-10, running._num_quantile_bins + 1)
        # np.histogram(pixels, bins=edges): bin k holds edges[k] <= v < edges[k+1], the last bin closed
        below = np.concatenate([[0], np.cumsum(channel)])  # below[i]: pixels with a value < i
        at_edges = np.concatenate([np.searchsorted(values, edges[:-1], "left"), np.searchsorted(values, edges[-1:], "right")])
        running._bin_edges.append(edges)
        running._histograms.append(np.diff(below[at_edges]).astype(np.float64))
    return running.get_statistics()


# --- the arm --------------------------------------------------------------------------------

def release_port(bus) -> None:
    """Mark the Feetech SDK's port free: a read cut off by a fault leaves it marked busy, and
    every later read would fail with "port is in use"."""
    handler = bus.port_handler
    _require_attributes("release_port", "the Feetech SDK's PortHandler", handler, ("is_using",))
    handler.is_using = False


# --- appending ------------------------------------------------------------------------------

@contextmanager
def linked_aggregation():
    """Inside the block, LeRobot's aggregate_datasets writes the same dataset as always, but a
    whole file it would copy unchanged (a video file, a data or episodes file whose rows keep
    their numbers) is hard-linked instead, and a linked file it is about to extend is made its
    own file first (a copy, for parquet, which is rewritten in place; for a video, which LeRobot
    writes to a temporary file and moves into place, the link is only moved aside). So appending
    to a dataset writes the new episodes and the files they extend, not the whole dataset, and
    the dataset appended to is never written to. Where links cannot be made (another file
    system), files are copied, as LeRobot does."""
    hook = "linked_aggregation"
    aggregate = _require(hook, "lerobot.datasets.aggregate", {
        "append_or_create_parquet_file": ("df", "src_path", "idx", "max_mb", "chunk_size", "default_path"),
        "concatenate_video_files": ("input_video_paths", "output_video_path"),
        "aggregate_datasets": ("repo_ids", "aggr_repo_id", "roots", "aggr_root"),
        "get_parquet_file_size_in_mb": (),
        "update_chunk_file_indices": ("chunk_idx", "file_idx", "chunks_size"),
    })
    if getattr(aggregate, "shutil", None) is not shutil:
        raise _changed(hook, "lerobot.datasets.aggregate no longer copies files with shutil")
    append, concatenate = aggregate.append_or_create_parquet_file, aggregate.concatenate_video_files

    def link(src, dst, *args, **kwargs):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy(src, dst, *args, **kwargs)
        return dst

    def append_linked(df, src_path, idx, max_mb, chunk_size, default_path, *args, aggr_root=None, **kwargs):
        """LeRobot's append_or_create_parquet_file, but a file it would write unchanged into a new
        destination file (by its own rule for when to start one) is linked there."""
        def path(chunk, file):
            return Path(aggr_root) / default_path.format(chunk_index=chunk, file_index=file)

        target = (idx["chunk"], idx["file"])
        if path(*target).exists():
            whole = not kwargs.get("concatenate", True) or (
                aggregate.get_parquet_file_size_in_mb(src_path) + aggregate.get_parquet_file_size_in_mb(path(*target))
                >= max_mb)
            target = aggregate.update_chunk_file_indices(*target, chunk_size) if whole else None
        if target is not None and not path(*target).exists() and _holds(src_path, df):
            path(*target).parent.mkdir(parents=True, exist_ok=True)
            link(src_path, path(*target))
            idx["chunk"], idx["file"] = target
            return idx, target
        dst = path(idx["chunk"], idx["file"])
        if dst.exists() and os.stat(dst).st_nlink > 1:  # extended in place next: its own file first
            aside = dst.with_name(dst.name + ".linked")
            os.replace(dst, aside)
            shutil.copyfile(aside, dst)
            os.unlink(aside)
        return append(df, src_path, idx, max_mb, chunk_size, default_path, *args, aggr_root=aggr_root, **kwargs)

    def concatenate_linked(input_video_paths, output_video_path, *args, **kwargs):
        output = Path(output_video_path)
        inputs = [Path(p) for p in input_video_paths]
        if output in inputs and output.exists() and os.stat(output).st_nlink > 1:
            aside = output.with_name(output.name + ".linked.mp4")  # read from here, written anew
            os.replace(output, aside)
            try:
                concatenate([aside if p == output else p for p in inputs], output, *args, **kwargs)
            finally:
                aside.unlink(missing_ok=True)
            return
        concatenate(input_video_paths, output_video_path, *args, **kwargs)

    aggregate.shutil = types.SimpleNamespace(**{**vars(shutil), "copy": link})
    aggregate.append_or_create_parquet_file, aggregate.concatenate_video_files = append_linked, concatenate_linked
    try:
        yield aggregate
    finally:
        aggregate.shutil = shutil
        aggregate.append_or_create_parquet_file, aggregate.concatenate_video_files = append, concatenate


# columns that aggregate renumbers: a file whose rows keep these is the same file
_NUMBERS = ("episode_index", "index", "task_index", "dataset_from_index", "dataset_to_index", "data/chunk_index",
            "data/file_index", "meta/episodes/chunk_index", "meta/episodes/file_index")


def _holds(path, df) -> bool:
    """Whether the parquet file at `path` holds the rows of `df` as they are (the numbers that
    aggregating changes, and for a metadata file every column)."""
    import pandas as pd
    import pyarrow.parquet as pq

    path = Path(path)
    names = pq.read_schema(path).names
    if sorted(names) != sorted(df.columns):
        return False
    if path.parent.parent.name == "episodes":  # meta/episodes/chunk-N/file-M.parquet: small, every column
        theirs = pd.read_parquet(path)
        return len(theirs) == len(df) and theirs[list(df.columns)].reset_index(drop=True).equals(df.reset_index(drop=True))
    columns = [c for c in _NUMBERS if c in names]
    theirs = pq.read_table(path, columns=columns).to_pandas()
    return len(theirs) == len(df) and all(np.array_equal(theirs[c].to_numpy(), df[c].to_numpy()) for c in columns)


@contextmanager
def in_memory_reads():
    """Inside the block, LeRobot reads a dataset's parquet files (its episodes table, its frames)
    into memory, the rows asked for only, where it would first write an Arrow copy of every file
    it reads into the datasets library's cache and map that: appending then reading back the
    metadata of every episode would write a copy of it, on every run. The values are the same."""
    hook = "in_memory_reads"
    params = ("pq_dir", "features", "episodes")
    io_utils = _require(hook, "lerobot.datasets.io_utils", {"load_nested_dataset": params})
    reader = _require(hook, "lerobot.datasets.dataset_reader", {"load_nested_dataset": params})
    original = io_utils.load_nested_dataset

    def load_in_memory(pq_dir, features=None, episodes=None):
        import datasets
        import pyarrow.dataset as pa_ds

        paths = sorted(Path(pq_dir).glob("*/*.parquet"))
        if not paths:
            raise FileNotFoundError(f"Provided directory does not contain any parquet file: {pq_dir}")
        rows = pa_ds.field("episode_index").isin(episodes) if episodes is not None else None
        table = pa_ds.dataset([str(p) for p in paths], format="parquet").to_table(filter=rows)
        dataset = datasets.Dataset(table)
        return dataset.cast(features) if features is not None and dataset.features != features else dataset

    io_utils.load_nested_dataset = reader.load_nested_dataset = load_in_memory
    try:
        yield
    finally:
        io_utils.load_nested_dataset = reader.load_nested_dataset = original
