"""The conversion as one Python call: raw episodes -> a LeRobot dataset, checked and in place.

    from slarm.convert import convert
    summary = convert(["raw/so101_pickplace_v1"], "datasets/so101_pickplace_224", size=(224, 224))
    summary.added, summary.frames, summary.warnings

slarm-convert is a thin command line over `convert`. Every refusal and failure is a
slarm.errors exception (Refused before any work, SlarmError after, Interrupted), whose text is
the whole message; warnings (damaged files skipped, another calibration) go to `warn` and are
kept in the Summary too; notes and the closing line (Summary.line()) go to `note`.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from slarm.common import count, disk_full, listed, stops_held
from slarm.errors import Interrupted, Refused, SlarmError
from slarm.raw import episode_index
from slarm.so101 import zero_shifts

from . import on_ray, v21, v30
from . import target as T
from .encoding import SizeRefused, check_codec
from .features import features
from .joint_units import why_not
from .prepare import Converted, prepare_episode
from .settings import Settings
from .sources import MAX_GAP_S, Source, find, holds_episodes, is_lerobot_dataset, why_no_episodes
from .stats import check_finite
from .workers import Skipped, in_workers, usable_cores

DAMAGED = "skipped (a damaged raw file: move it out of the raw folder)"


@dataclass
class Summary:
    """What a conversion did."""

    dataset: Path
    added: int = 0  # episodes added by this run
    already_there: int = 0  # episodes of the raw folders the dataset held before
    damaged: int = 0  # raw files skipped as damaged or implausible
    frames: int = 0  # frames added
    repeated: int = 0  # of them, grid slots filled by repeating a tick (missed ticks)
    replaced: int = 0  # undecodable camera frames replaced by a neighbouring one
    episodes: int = 0  # episodes the dataset holds now
    seconds: float = 0.0
    pushed_to: str | None = None  # the Hub repository, once pushed
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The last line slarm-convert prints."""
        if not self.added:
            return f"nothing to add: {self.dataset} already holds all {count(self.already_there, 'episode')}"
        return (f"done: {count(self.added, 'episode')} added, {self.already_there} already there"
                + (f", {self.damaged} damaged skipped" if self.damaged else "") + f"; {self.frames} frames "
                f"({self.repeated} repeated for missed ticks" + (f", {self.replaced} undecodable replaced"
                                                                 if self.replaced else "")
                + f"); {self.seconds:.1f}s, {self.frames / self.seconds:.1f} frames/s; "
                f"{self.dataset} now holds {count(self.episodes, 'episode')}")


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def convert(raw_dirs: Sequence[str | Path], dataset_dir: str | Path, *, size: tuple[int, int] = (256, 256),
            resize_mode: str = "stretch", action: str = "state", joint_units: str = "rad", format: str = "v3.0",
            codec: str = "libsvtav1", jpeg_quality: int = 80, workers: int | None = None, device: str = "cpu",
            task: str | None = None, max_gap: float = MAX_GAP_S, push_to_hub: str | None = None,
            private: bool = False, retry_command: str | None = None, ray: str | None = None,
            warn: Callable[[str], None] = lambda text: _stderr(f"warning: {text}"),
            note: Callable[[str], None] = print) -> Summary:
    """Convert the complete raw episodes in `raw_dirs` (folders slarm-capture wrote) into the
    LeRobot dataset at `dataset_dir`: a new dataset, or the episodes an existing slarm dataset
    does not hold yet (the same settings required). The new dataset is built beside the old one,
    verified by LeRobot's reader, and exchanged for it in one step; a failure or a Ctrl-C leaves
    the old one as it was. `push_to_hub` ("user/name") pushes the result, also when nothing was
    added (so that a failed push is retried by running again); `retry_command` is quoted in a
    failed push's message.

    size (width, height), resize_mode (stretch, crop, pad), action (state, next-state),
    joint_units (rad, lerobot), format (v3.0, v2.1), codec (v3.0), jpeg_quality (v2.1), device
    (cpu, cuda), task (None: each episode's own), max_gap (seconds: an episode with a longer
    pause is skipped), ray (a Ray cluster's address: episodes are prepared there, on_ray.py)
    are slarm-convert's options of the same names."""
    started = time.monotonic()
    _quiet_libraries()
    raw_dirs, dataset_dir = [Path(d) for d in raw_dirs], _dataset_folder(Path(dataset_dir))
    summary = Summary(dataset_dir)

    def warning(text: str) -> None:
        summary.warnings.append(text)
        warn(text)

    if push_to_hub is not None:
        _check_repo_id(push_to_hub)
    width, height = size
    if ray is not None and device == "cuda":
        raise Refused("--ray and --device cuda: not together yet; Ray tasks decode on their nodes' CPUs")
    if device == "cuda":
        _check_cuda()
    settings = Settings(width, height, resize_mode, action, codec, task, format, jpeg_quality, device, joint_units)
    layout = v21 if format == "v2.1" else v30  # merge and verify of the dataset format

    for d in raw_dirs:
        if d.is_file():
            raise Refused(f"{d} is a file; give the folder of raw episodes it is in ({d.parent})")
        if not d.is_dir():
            raise Refused(f"{d}: no such folder of raw episodes (slarm-capture writes them to {{raw_dir}}/{{dataset_name}})")
    if format == "v3.0":
        _check_encoder(codec, width, height)

    empty = [d for d in raw_dirs if not holds_episodes(d)]
    if len(empty) == len(raw_dirs):
        swapped = " (slarm-convert RAW_DIR DATASET_DIR: the raw folder comes first)" \
            if any(map(is_lerobot_dataset, empty)) else ""
        raise Refused("; ".join(map(why_no_episodes, empty)) + swapped)
    for d in empty:
        warning(f"{why_no_episodes(d)}; it is left out")
    sources, unfinished, left_out = find(raw_dirs, max_gap)
    for p in unfinished:
        warning(f"{p}: unfinished episode (capture still running, or killed); skipped")
    for r in left_out:
        warning(f"{r.path}: {r.reason}; {DAMAGED}")
    if not sources:
        message = f"no complete raw episodes in {', '.join(map(str, raw_dirs))}"
        if left_out:
            raise SlarmError(message + f" that can be converted ({count(len(left_out), 'damaged file')})")
        raise Refused(message)
    _check_one_setup(sources, settings, warning, note)
    first = sources[0]
    cluster = on_ray.join(ray, sources) if ray is not None else None  # (CPUs, nodes)

    T.claim(dataset_dir)
    target = T.open_target(dataset_dir)
    T.check_compatible(target, first.fps, features(first, settings), settings.describe())

    seen = set(target.uuids)
    new: list[Source] = []
    for s in sources:
        if s.uuid not in seen:
            new.append(s)
            seen.add(s.uuid)
    summary.already_there = len(sources) - len(new)
    if cluster and not new:
        on_ray.disconnect()
    if new:
        pool = _pool(cluster, workers, new, note)
        _add(new, target, settings, layout, pool, summary, warning)
        summary.damaged += len(left_out)
        summary.seconds = time.monotonic() - started
    note(summary.line())
    if push_to_hub:
        _push(dataset_dir, push_to_hub, private, format, retry_command)
        summary.pushed_to = push_to_hub
        note(f"pushed to https://huggingface.co/datasets/{push_to_hub}")
    return summary


def _pool(cluster: tuple[int, int] | None, workers: int | None, new: list[Source], note: Callable[[str], None]):
    """Where episodes are prepared: pool(job, new, folder, settings) runs job for each episode and
    gives the results in episode order. workers.in_workers: processes on this machine;
    on_ray.on_ray: tasks on the Ray cluster joined (on_ray.join), whose nodes are named when done."""
    if cluster is None:
        workers = min(workers or usable_cores(), len(new))
        return lambda job, new, folder, settings: in_workers(job, new, folder, settings, workers)
    cpus, nodes = cluster
    workers = min(workers or cpus, len(new))

    @contextmanager
    def pool(job, new, folder, settings):
        used: Counter = Counter()
        with on_ray.on_ray(job, new, folder, settings, workers, used) as results:
            yield results
        note(f"ray: {count(sum(used.values()), 'episode')} prepared on {len(used)} of the cluster's "
             f"{count(nodes, 'node')} ({', '.join(map(str, used.values()))}), {workers} at a time")

    return pool


def _add(new: list[Source], target: T.Target, settings: Settings, layout, pool, summary: Summary,
         warning: Callable[[str], None]) -> None:
    """Convert the episodes `new`, put them after the ones `target` holds in a dataset built in a
    work folder, verify it, and exchange it for the old one."""
    dataset_dir = target.path
    work = T.work_dir(dataset_dir)
    _temporary_files_in(work)
    replaced = False
    episodes: list[dict] = []
    try:
        merged = work / "dataset"
        if settings.format == "v3.0":
            added = work / ("new" if target.exists else "dataset")
            results = _write_v30(new, added, work / "encoded", settings, pool, work / "datasets-cache")
        else:
            results = _write_per_episode(new, work, settings, pool)
        done = [(i, s, r) for i, (s, r) in enumerate(zip(new, results)) if isinstance(r, Converted)]
        for src, r in zip(new, results):
            if isinstance(r, Skipped):
                warning(f"{r.reason}; {DAMAGED}")
                summary.damaged += 1
                continue
            for cam, rows in r.undecodable.items():
                warning(f"{src.path}: camera {cam}: {_frames(rows)} could not be decoded (a broken JPEG from the "
                        f"camera); {'each' if len(rows) > 1 else 'it'} was replaced by a neighbouring frame")
        if not done:
            raise RuntimeError("no episode could be converted")
        if settings.format == "v3.0":
            roots = [dataset_dir, added] if target.exists else []
        else:
            roots = ([dataset_dir] if target.exists else []) + [work / f"episode-{i}" for i, _, _ in done]
        if roots:
            layout.merge(roots, merged)
        episodes = [T.episode_entry(e["uuid"], e.get("source", "")) for e in target.episodes]
        episodes += [T.episode_entry(s.uuid, s.path) for _, s, _ in done]
        T.write_meta(merged, settings.describe(), episodes)
        frames = sum(r.frames for _, _, r in done)
        total_frames = frames + (target.info.get("total_frames", 0) if target.exists else 0)
        cams = [f"observation.images.{c}" for c, _, _ in new[0].cameras]
        layout.verify(merged, len(episodes), total_frames, cams, len(done))
        check_finite(merged)
        with stops_held():  # a Ctrl-C here lands after the swap, never between its steps
            T.replace(dataset_dir, merged)
            replaced = True
    except KeyboardInterrupt:
        _remove_work(work)
        if replaced:
            now = f"{dataset_dir} was complete by then: it holds {count(len(episodes), 'episode')}"
        elif target.exists:
            now = f"{dataset_dir} is unchanged; run the same command again to add the new episodes"
        else:
            now = f"nothing was written to {dataset_dir}; run the same command again to convert"
        raise Interrupted(f"interrupted: {now}") from None
    except Exception as e:
        _remove_work(work)
        full = (f"\nThe disk that holds {work.parent} ({_mount_point(work.parent)}) is full: the new dataset is "
                "written next to the old one, which it replaces at the end. Free some space there, then run the same "
                "command again." if disk_full(e) else "")
        raise SlarmError(f"conversion failed, {dataset_dir} is unchanged: {e}{full}") from e
    _remove_work(work)
    summary.added, summary.episodes, summary.frames = len(done), len(episodes), frames
    summary.repeated = sum(r.repeated for _, _, r in done)
    summary.replaced = sum(len(rows) for _, _, r in done for rows in r.undecodable.values())


def _write_v30(new: list[Source], out: Path, encoded: Path, settings: Settings, pool,
               cache: Path) -> list[Converted | Skipped]:
    """Workers prepare the episodes (prepare.py) while this process imports LeRobot; then LeRobot's
    writer adds each prepared episode to the dataset at `out`, in order. The datasets library
    keeps its cache in `cache`."""
    results: list[Converted | Skipped] = []
    with pool(prepare_episode, new, encoded, settings) as episodes:
        gc.disable()  # while importing LeRobot (a million objects, none of them garbage)
        _quiet_lerobot()
        v30.use_cache(cache)
        writer = v30.Writer(out, new[0], settings)
        gc.freeze()  # and not scanned by later collections, nor torn down at exit
        gc.enable()
        for episode in episodes:
            if not isinstance(episode, Skipped):
                writer.add(episode)
                episode = episode.converted
            results.append(episode)
        writer.finish()
    return results


def _write_per_episode(new: list[Source], work: Path, settings: Settings, pool) -> list[Converted | Skipped]:
    """Each new episode into its own small v2.1 dataset at work/episode-N."""
    from lerobot.datasets import compute_stats  # noqa: F401  imported once, here: forked workers inherit it

    with pool(v21.write_episode, new, work, settings) as results:
        return list(results)


def _dataset_folder(path: Path) -> Path:
    """DATASET_DIR as given, or where it really is when that matters: the new dataset is built
    beside it and then takes its place, so "." or ".." must become a folder name, and a symlink
    to a dataset the folder it points to (the symlink stays)."""
    real, here = path.resolve(), Path.cwd()
    if real == here or real in here.parents:
        raise Refused(f"{path} is the folder this command runs in{'' if real == here else ' (or holds it)'}: "
                      "slarm-convert replaces DATASET_DIR as a whole when it is done, which would leave this shell "
                      "in a removed folder. Run it from another folder (e.g. the one above)")
    return real if path.is_symlink() or path.name in ("", ".", "..") else path


def _check_cuda() -> None:
    try:
        import torch
        import torchvision.io  # noqa: F401  nvJPEG decoding
    except ImportError as e:
        raise Refused(f"--device cuda needs torch and torchvision ({e})") from None
    if not torch.cuda.is_available():
        raise Refused("--device cuda: PyTorch sees no NVIDIA GPU on this machine (no GPU, no driver, or a CPU-only "
                      "torch). Leave out --device to convert on the CPU.")


def _check_encoder(codec: str, width: int, height: int) -> None:
    """Before any work: the encoder opens on this machine, at this size."""
    try:
        check_codec(codec, width, height)
    except ValueError as e:
        if isinstance(e, SizeRefused):
            hint = (f"Choose another --size ({codec} needs an even width and height, and may refuse very small "
                    "images), or use libsvtav1 (default).")
        elif "nvenc" in codec:
            hint = ("NVENC needs an NVIDIA GPU that has a video encoder (data-centre GPUs such as the A100, "
                    "H100 and H200 have none) and its driver; use libsvtav1 (default) or h264.")
        else:
            hint = "Use libsvtav1 (default) or h264."
        raise Refused(f"--codec {codec}: {e}. {hint}") from None


def _check_one_setup(sources: list[Source], s: Settings, warning, note) -> None:
    """All episodes go into one dataset: the same fps, state and cameras. Capture sizes may
    differ, since every frame is resized to the one target size: the run says so."""
    def setup(src: Source) -> dict[str, str]:
        return {"fps": str(src.fps), "state": ", ".join(src.state_names),
                "cameras": ", ".join(name for name, _, _ in src.cameras)}

    first = sources[0]
    ours = setup(first)
    for src in sources[1:]:
        for what, theirs in setup(src).items():
            if theirs != ours[what]:
                raise Refused(f"{src.path} was recorded with other {what} ({theirs}) than {first.path} "
                              f"({ours[what]}); convert them into separate datasets")
    if why := next(filter(None, (why_not(src, s.joint_units) for src in sources)), None):
        raise Refused(why)
    if first.robot_type == "so101":
        _warn_calibrations(sources, warning)
    _warn_other_cameras(sources, warning)
    captured = sorted({f"{w}x{h}" for src in sources for _, w, h in src.cameras})
    if len(captured) > 1:
        note(f"note: frames were captured at {', '.join(captured)}; all become {s.width}x{s.height} ({s.resize_mode})")


def _warn_calibrations(sources: list[Source], warning) -> None:
    """Episodes recorded after the arm was recalibrated (or with another arm) read other joint
    angles for the same pose: say which, and by how much, once per calibration."""
    first, others = sources[0], {}
    for src in sources[1:]:
        if moved := zero_shifts(first.calibration, src.calibration):
            others.setdefault(", ".join(moved), []).append(src.path.name)
    for moved, names in others.items():
        warning(f"{listed(names, 3)} {'were' if len(names) > 1 else 'was'} recorded with another calibration of "
                f"the arm than {first.path.name} ({moved}): the same pose reads other joint angles in them; "
                "convert them into a separate dataset if that matters")


def _warn_other_cameras(sources: list[Source], warning) -> None:
    """Episodes whose camera under a name was another camera than in the first episode that says
    (camera numbers change order after a reboot or replug): say which, once per camera."""
    for name, _, _ in sources[0].cameras:
        known = [src for src in sources if name in src.identities]
        if not known:
            continue
        first, others = known[0], {}
        for src in known[1:]:
            if not src.identities[name].same_device(first.identities[name]):
                others.setdefault(str(src.identities[name]), []).append(src.path)
        for other, paths in others.items():
            were = "were" if len(paths) > 1 else "was"
            warning(f"{listed((p.name for p in paths), 3)} {were} recorded with another camera as "
                    f"'{name}', {other}, than {first.path.name}, {first.identities[name]}: camera numbers change "
                    "order after a reboot or replug, so check that they show the same view (slarm-inspect "
                    f"{paths[0].parent} --rerun {episode_index(paths[0])}); convert them into a separate dataset "
                    "if not")


def _frames(rows: list[int], shown: int = 10) -> str:
    """'frame 20', 'frames 20, 57', 'frames 1, 2, ..., 10, ... (25 in all)'."""
    return f"frame{'s' if len(rows) > 1 else ''} {listed(rows, shown)}"


def _check_repo_id(repo_id: str) -> None:
    """Before any work: a repository id the Hub would refuse stops here, not after the conversion."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
        if "/" not in repo_id:
            raise HFValidationError("it has no namespace")
    except HFValidationError as e:
        raise Refused(f"--push-to-hub {repo_id!r}: not a Hub repository id ({e}); give user/name, e.g. "
                      "me/so101_pickplace") from None


def _push(dataset_dir: Path, repo_id: str, private: bool, fmt: str, retry_command: str | None) -> None:
    from .hub import explain, push

    again = f":\n  {retry_command}" if retry_command else ""
    work = None
    if fmt == "v3.0":  # LeRobot reads the dataset to push it: the datasets cache goes in a work folder
        try:
            work = T.work_dir(dataset_dir)
            v30.use_cache(work)
        except T.TargetError:  # a folder it cannot write in: the user's cache, then
            pass
    try:
        push(dataset_dir, repo_id, private, fmt)
    except KeyboardInterrupt:
        raise Interrupted(f"push to the Hub interrupted. The local dataset {dataset_dir} is intact; run the same "
                          f"command again to push it{again}") from None
    except Exception as e:
        raise SlarmError(f"push to the Hub failed: {explain(e, repo_id)}.\nThe local dataset {dataset_dir} is "
                         f"intact; run the same command again to retry{again}") from None
    finally:
        if work is not None:
            _remove_work(work)


def _quiet_libraries() -> None:
    """Keep the terminal for our progress bar and summary: no encoder banners or muxer notes."""
    import av.logging

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only
    # LeRobot's inner bars (aggregate) off; read when tqdm is imported; our bar sets disable= itself
    os.environ.setdefault("TQDM_DISABLE", "1")
    av.logging.set_libav_level(av.logging.ERROR)


def _quiet_lerobot() -> None:
    """No inner progress bars from the datasets library LeRobot writes with."""
    import datasets

    datasets.disable_progress_bars()


def _temporary_files_in(work: Path) -> None:
    """Temporary files of this process (LeRobot joins videos through them: as large as a video
    file) go in the work folder, on the dataset's disk and removed with it, not in $TMPDIR."""
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    tempfile.tempdir = str(tmp)


def _mount_point(path: Path) -> Path:
    """The mount point of the file system that holds `path` (the disk that filled)."""
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _remove_work(work: Path) -> None:
    """Remove the work folder, and put the datasets library's cache and the temporary folder
    back where they were (for a later run in the same process: a notebook, the tests)."""
    shutil.rmtree(work, ignore_errors=True)
    tempfile.tempdir = None
    if "datasets" in sys.modules:
        v30.use_cache(None)
