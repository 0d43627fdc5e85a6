"""slarm-convert: raw episodes -> a LeRobot v3.0 (or v2.1) dataset (resize, action, stats, append, verify, Hub)."""

from __future__ import annotations

import gc
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

from slarm import config as C
from slarm.common import count, disk_full, listed, stop_on_signals, stops_held
from slarm.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, run_command
from slarm.raw import episode_index
from slarm.so101 import zero_shifts

from . import target as T
from . import v21, v30
from .encoding import CODECS, SizeRefused, check_codec
from .frames import RESIZE_MODES
from .joint_units import UNITS, why_not
from .prepare import prepare_episode
from .settings import DEVICES, FORMATS, Settings
from .sources import MAX_GAP_S, Source, find, holds_episodes, is_lerobot_dataset, why_no_episodes
from .stats import check_finite
from .workers import Skipped, in_workers, usable_cores


def parse_size(ctx, param, value):
    if value is None:
        return None
    try:
        w, h = (int(x) for x in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected WIDTHxHEIGHT, e.g. 256x256 or 224x224") from None
    if not (8 <= w <= 4096 and 8 <= h <= 4096):
        raise click.BadParameter(f"{value!r}: width and height must each be between 8 and 4096 pixels")
    return w, h


def parse_task(ctx, param, value):
    if value is not None and not value.strip():
        raise click.BadParameter("empty; give the task in words (e.g. \"pick up the red cube\"), "
                                 "or leave --task out to keep the one stored in each episode")
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("raw_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option("--size", callback=parse_size, help="Image size WIDTHxHEIGHT. Default: the config's target size, else 256x256.")
@click.option("--resize-mode", type=click.Choice(RESIZE_MODES), default="stretch", show_default=True,
              help="stretch to the size, crop the centre, or pad (letterbox).")
@click.option("--action", "action", type=click.Choice(["state", "next-state"]), default="state", show_default=True,
              help="action = the state of the same frame, or of the next frame (last frame: its own).")
@click.option("--joint-units", type=click.Choice(UNITS), default="rad", show_default=True,
              help="SO-101 state and action: radians as recorded, or as LeRobot's so101_follower reads them "
                   "(joints in degrees, gripper 0-100, names shoulder_pan.pos ...) for running the policy with "
                   "lerobot-rollout.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="v3.0", show_default=True,
              help="LeRobot dataset format: v3.0 (LeRobot 0.4+, videos) or v2.1 (OpenPI; JPEG images in parquet).")
@click.option("--codec", type=click.Choice(CODECS), default=None,
              help="v3.0 video codec, with LeRobot's settings for it. Default: libsvtav1 (LeRobot's default).")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=80, show_default=True,
              help="v2.1: JPEG quality of the embedded images.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Episodes converted in parallel. Default: the cores it may use (a quarter of them with --device cuda).")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="Decode and resize on the CPU, or on an NVIDIA GPU (nvJPEG). Encoding follows --codec.")
@click.option("--task", callback=parse_task,
              help="Task text for every episode. Default: the one stored in each raw episode.")
@click.option("--push-to-hub", "repo_id", help="After writing, push to this Hub dataset repo (user/name).")
@click.option("--private", is_flag=True, help="Make the Hub repository private.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Take size and Hub settings from this capture config.")
@click.option("--max-gap", "max_gap", type=click.FloatRange(min=0, min_open=True), default=MAX_GAP_S, show_default=True,
              metavar="SECONDS", help="An episode with a longer pause between two recorded ticks (the recording "
              "stalled, the machine slept) is skipped, not filled with copies of one frame.")
def main(raw_dirs, dataset_dir, size, resize_mode, action, joint_units, fmt, codec, jpeg_quality, workers, device, task,
         repo_id, private, config_path, max_gap):
    """Convert the raw episodes in RAW_DIRS (folders written by slarm-capture) into the LeRobot
    dataset DATASET_DIR (v3.0, or v2.1 for OpenPI). A new folder is created; an existing slarm
    dataset gets only the episodes it does not hold yet. Re-running the same command adds nothing.

    \b
    Examples:
      slarm-convert raw/so101_pickplace_v1 datasets/so101_pickplace_v1
      slarm-convert raw/so101_pickplace_v1 datasets/so101_pickplace_224 --size 224x224
      slarm-convert raw/day1 raw/day2 datasets/pickplace --push-to-hub me/pickplace
      slarm-convert raw/pad datasets/pad_openpi --format v2.1 --action next-state --size 224x224

    Exit status: 0 done (also when there was nothing to add); 1 failed (no episode could be
    converted, the disk, the Hub push); 2 refused before any work (an argument, a dataset that
    differs, another run writing it); 130 interrupted (Ctrl-C, SIGTERM).
    """
    started = time.monotonic()
    stop_on_signals()
    _quiet_libraries()
    private_flag = private
    if config_path:
        try:
            cfg = C.load(config_path)
        except C.ConfigError as e:
            _fail(f"config error: {e}", EXIT_USAGE)
        sizes = {c.name: (c.target_width, c.target_height) for c in cfg.cameras}
        if size is None and len(set(sizes.values())) > 1:
            differ = ", ".join(f"{name} {w}x{h}" for name, (w, h) in sizes.items())
            _fail(f"config error: {config_path}: the cameras' target sizes differ ({differ}); slarm-convert "
                  "writes one image size for every camera: make them equal, or give --size WxH", EXIT_USAGE)
        size = size or next(iter(sizes.values()))
        if repo_id is None and cfg.hub.push_to_hub:
            repo_id, private_flag = cfg.hub.repo_id, private or cfg.hub.private
    if repo_id is not None:
        _check_repo_id(repo_id)
    width, height = size or (256, 256)
    if device == "cuda":
        _check_cuda()
        workers = workers or max(1, usable_cores() // 4)  # measured on an H100 machine: README, "Figures"
    codec = codec or "libsvtav1"
    settings = Settings(width, height, resize_mode, action, codec, task, fmt, jpeg_quality, device, joint_units)
    layout = v21 if fmt == "v2.1" else v30  # features, merge and verify of the dataset format
    dataset_dir = _dataset_folder(dataset_dir)

    for d in raw_dirs:
        if d.is_file():
            _fail(f"{d} is a file; give the folder of raw episodes it is in ({d.parent})", EXIT_USAGE)
        if not d.is_dir():
            _fail(f"{d}: no such folder of raw episodes (slarm-capture writes them to {{raw_dir}}/{{dataset_name}})", EXIT_USAGE)
    if fmt == "v3.0":
        _check_encoder(codec, width, height)

    empty = [d for d in raw_dirs if not holds_episodes(d)]
    if len(empty) == len(raw_dirs):
        swapped = " (slarm-convert RAW_DIR DATASET_DIR: the raw folder comes first)" \
            if any(map(is_lerobot_dataset, empty)) else ""
        _fail("; ".join(map(why_no_episodes, empty)) + swapped, EXIT_USAGE)
    for d in empty:
        click.echo(f"warning: {why_no_episodes(d)}; it is left out", err=True)
    sources, unfinished, refused = find(list(raw_dirs), max_gap)
    for p in unfinished:
        click.echo(f"warning: {p}: unfinished episode (capture still running, or killed); skipped", err=True)
    for r in refused:
        click.echo(f"warning: {r.path}: {r.reason}; skipped (a damaged raw file: move it out of the raw folder)",
                   err=True)
    if not sources:
        _fail(f"no complete raw episodes in {', '.join(map(str, raw_dirs))}"
              + (f" that can be converted ({count(len(refused), 'damaged file')})" if refused else ""),
              EXIT_FAILURE if refused else EXIT_USAGE)
    _check_one_setup(sources, settings)
    first = sources[0]

    try:
        T.claim(dataset_dir)
        target = T.open_target(dataset_dir)
        T.check_compatible(target, first.fps, layout.features(first, settings), settings.describe())
    except T.TargetError as e:
        _fail(str(e), EXIT_USAGE)

    seen = set(target.uuids)
    new: list[Source] = []
    for s in sources:
        if s.uuid not in seen:
            new.append(s)
            seen.add(s.uuid)
    skipped = len(sources) - len(new)
    if not new:
        click.echo(f"nothing to add: {dataset_dir} already holds all {count(len(sources), 'episode')}")
        if repo_id:  # so that re-running the command retries a failed push
            _push(dataset_dir, repo_id, private_flag, fmt)
        return

    workers = min(workers or usable_cores(), len(new))
    try:
        work = T.work_dir(dataset_dir)
    except T.TargetError as e:
        _fail(str(e), EXIT_USAGE)
    _temporary_files_in(work)
    replaced = False
    try:
        merged = work / "dataset"
        if fmt == "v3.0":
            added = work / ("new" if target.exists else "dataset")
            results = _write_v30(new, added, work / "encoded", settings, workers, work / "datasets-cache")
        else:
            results = _write_per_episode(new, work, settings, workers)
        done = [(i, s, r) for i, (s, r) in enumerate(zip(new, results)) if not isinstance(r, Skipped)]
        damaged = refused + [r for r in results if isinstance(r, Skipped)]
        for src, r in zip(new, results):
            if isinstance(r, Skipped):
                click.echo(f"warning: {r.reason}; skipped (a damaged raw file: move it out of the raw folder)", err=True)
                continue
            for cam, rows in r["undecodable"].items():
                click.echo(f"warning: {src.path}: camera {cam}: {_frames(rows)} could not be decoded (a broken JPEG "
                           f"from the camera); {'each' if len(rows) > 1 else 'it'} was replaced by a neighbouring frame",
                           err=True)
        if not done:
            raise RuntimeError("no episode could be converted")
        if fmt == "v3.0":
            roots = [dataset_dir, added] if target.exists else []
        else:
            roots = ([dataset_dir] if target.exists else []) + [work / f"episode-{i}" for i, _, _ in done]
        if roots:
            layout.merge(roots, merged)
        episodes = [T.episode_entry(e["uuid"], e.get("source", "")) for e in target.episodes]
        episodes += [T.episode_entry(s.uuid, s.path) for _, s, _ in done]
        T.write_meta(merged, settings.describe(), episodes)
        frames = sum(r["frames"] for _, _, r in done)
        total_frames = frames + (target.info.get("total_frames", 0) if target.exists else 0)
        cams = [f"observation.images.{c}" for c, _, _ in first.cameras]
        layout.verify(merged, len(episodes), total_frames, cams)
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
        _fail(f"interrupted: {now}", EXIT_INTERRUPTED)
    except Exception as e:
        _remove_work(work)
        full = (f"\nThe disk that holds {work.parent} ({_mount_point(work.parent)}) is full: the new dataset is "
                "written next to the old one, which it replaces at the end. Free some space there, then run the same "
                "command again." if disk_full(e) else "")
        _fail(f"conversion failed, {dataset_dir} is unchanged: {e}{full}", EXIT_FAILURE)
    _remove_work(work)

    elapsed = time.monotonic() - started
    repeated = sum(r["repeated"] for _, _, r in done)
    stand_ins = sum(len(rows) for _, _, r in done for rows in r["undecodable"].values())
    click.echo(
        f"done: {count(len(done), 'episode')} added, {skipped} already there"
        + (f", {len(damaged)} damaged skipped" if damaged else "") + f"; {frames} frames "
        f"({repeated} repeated for missed ticks" + (f", {stand_ins} undecodable replaced" if stand_ins else "")
        + f"); {elapsed:.1f}s, {frames / elapsed:.1f} frames/s; "
        f"{dataset_dir} now holds {count(len(episodes), 'episode')}"
    )
    if repo_id:
        _push(dataset_dir, repo_id, private_flag, fmt)


def _write_v30(new: list[Source], out: Path, encoded: Path, settings: Settings, workers: int, cache: Path) -> list:
    """Workers prepare the episodes (prepare.py) while this process imports LeRobot; then LeRobot's
    writer adds each prepared episode to the dataset at `out`, in order. One result per episode:
    {frames, repeated, undecodable}, or Skipped. The datasets library keeps its cache in `cache`."""
    results = []
    with in_workers(prepare_episode, new, encoded, settings, workers) as episodes:
        gc.disable()  # while importing LeRobot (~1 M objects, none of them garbage): ~1 s less CPU
        _quiet_lerobot()
        v30.use_cache(cache)
        writer = v30.Writer(out, new[0], settings)
        gc.freeze()  # and not scanned by later collections, nor torn down at exit (~1.5 s)
        gc.enable()
        for episode in episodes:
            if not isinstance(episode, Skipped):
                writer.add(episode)
                episode = {"frames": episode.frames, "repeated": episode.repeated, "undecodable": episode.undecodable}
            results.append(episode)
        writer.finish()
    return results


def _write_per_episode(new: list[Source], work: Path, settings: Settings, workers: int) -> list:
    """Each new episode into its own small v2.1 dataset at work/episode-N; results as _write_v30's."""
    from lerobot.datasets import compute_stats  # noqa: F401  imported once, here: forked workers inherit it

    with in_workers(v21.write_episode, new, work, settings, workers) as results:
        return list(results)


def _dataset_folder(path: Path) -> Path:
    """DATASET_DIR as given, or where it really is when that matters: the new dataset is built
    beside it and then takes its place, so "." or ".." must become a folder name, and a symlink
    to a dataset the folder it points to (the symlink stays)."""
    real, here = path.resolve(), Path.cwd()
    if real == here or real in here.parents:
        _fail(f"{path} is the folder this command runs in{'' if real == here else ' (or holds it)'}: slarm-convert "
              "replaces DATASET_DIR as a whole when it is done, which would leave this shell in a removed folder. "
              "Run it from another folder (e.g. the one above)", EXIT_USAGE)
    return real if path.is_symlink() or path.name in ("", ".", "..") else path


def _check_cuda() -> None:
    try:
        import torch
        import torchvision.io  # noqa: F401  nvJPEG decoding
    except ImportError as e:
        _fail(f"--device cuda needs torch and torchvision ({e})", EXIT_USAGE)
    if not torch.cuda.is_available():
        _fail("--device cuda: PyTorch sees no NVIDIA GPU on this machine (no GPU, no driver, or a CPU-only torch). "
              "Leave out --device to convert on the CPU.", EXIT_USAGE)


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
        _fail(f"--codec {codec}: {e}. {hint}", EXIT_USAGE)


def _check_one_setup(sources: list[Source], s: Settings) -> None:
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
                _fail(f"{src.path} was recorded with other {what} ({theirs}) than {first.path} "
                      f"({ours[what]}); convert them into separate datasets", EXIT_USAGE)
    if why := next(filter(None, (why_not(src, s.joint_units) for src in sources)), None):
        _fail(why, EXIT_USAGE)
    if first.robot_type == "so101":
        _warn_calibrations(sources)
    _warn_other_cameras(sources)
    captured = sorted({f"{w}x{h}" for src in sources for _, w, h in src.cameras})
    if len(captured) > 1:
        click.echo(f"note: frames were captured at {', '.join(captured)}; all become {s.width}x{s.height} "
                   f"({s.resize_mode})")


def _warn_calibrations(sources: list[Source]) -> None:
    """Episodes recorded after the arm was recalibrated (or with another arm) read other joint
    angles for the same pose: say which, and by how much, once per calibration."""
    first, others = sources[0], {}
    for src in sources[1:]:
        if moved := zero_shifts(first.calibration, src.calibration):
            others.setdefault(", ".join(moved), []).append(src.path.name)
    for moved, names in others.items():
        click.echo(f"warning: {listed(names, 3)} {'were' if len(names) > 1 else 'was'} recorded with another calibration of "
                   f"the arm than {first.path.name} ({moved}): the same pose reads other joint angles in them; "
                   "convert them into a separate dataset if that matters", err=True)


def _warn_other_cameras(sources: list[Source]) -> None:
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
            click.echo(f"warning: {listed((p.name for p in paths), 3)} {were} recorded with another camera as "
                       f"'{name}', {other}, than {first.path.name}, {first.identities[name]}: camera numbers change "
                       "order after a reboot or replug, so check that they show the same view (slarm-inspect "
                       f"{paths[0].parent} --rerun {episode_index(paths[0])}); convert them into a separate dataset "
                       "if not", err=True)


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
        _fail(f"--push-to-hub {repo_id!r}: not a Hub repository id ({e}); give user/name, e.g. "
              "me/so101_pickplace", EXIT_USAGE)


def _push(dataset_dir: Path, repo_id: str, private: bool, fmt: str) -> None:
    from .hub import explain, push

    cmd = shlex.join(["slarm-convert", *sys.argv[1:]])
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
        _fail(f"push to the Hub interrupted. The local dataset {dataset_dir} is intact; run the same command "
              f"again to push it:\n  {cmd}", EXIT_INTERRUPTED)
    except Exception as e:
        _fail(f"push to the Hub failed: {explain(e, repo_id)}.\nThe local dataset {dataset_dir} is intact; "
              f"run the same command again to retry:\n  {cmd}", EXIT_FAILURE)
    finally:
        if work is not None:
            _remove_work(work)
    click.echo(f"pushed to https://huggingface.co/datasets/{repo_id}")


def _quiet_libraries() -> None:
    """Keep the terminal for our progress bar and summary: no encoder banners or muxer notes."""
    import av.logging

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only
    # LeRobot's inner bars (aggregate) off; read when tqdm is imported; our bar sets disable= itself
    os.environ.setdefault("TQDM_DISABLE", "1")
    av.logging.set_libav_level(av.logging.ERROR)


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


def _quiet_lerobot() -> None:
    """No inner progress bars from the datasets library LeRobot writes with."""
    import datasets

    datasets.disable_progress_bars()


def run() -> None:
    """The slarm-convert command: main(), then exit without Python's teardown of the modules
    LeRobot imports (torch's alone: ~0.5-0.8 s of CPU, freeing memory the process gives back
    anyway). By then every file is closed and the dataset is in place or untouched."""
    run_command(main)


def _fail(message: str, code: int):
    """The error on stderr, as warnings are (the summary and notes go to stdout); exit with `code`."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    run()
