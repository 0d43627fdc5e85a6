"""slarm-convert: the command line of slarm.convert.convert (conversion.py): options in, its lines out."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from slarm import config as C
from slarm.common import stop_on_signals
from slarm.errors import Refused, run_command

from .conversion import convert
from .encoding import CODECS
from .frames import RESIZE_MODES
from .joint_units import UNITS
from .settings import DEVICES, FORMATS
from .sources import MAX_GAP_S


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
              help="Episodes converted in parallel. Default: the cores it may use (with --ray, the cluster's CPUs).")
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
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Prepare the episodes as tasks on this Ray cluster (auto, HOST:PORT, ray://HOST:10001); the raw "
                   "folders must be at the same path on every node. Needs pip install 'slarm[ray]'.")
def main(raw_dirs, dataset_dir, size, resize_mode, action, joint_units, fmt, codec, jpeg_quality, workers, device, task,
         repo_id, private, config_path, max_gap, ray_address):  # the options, then slarm.convert.convert (conversion.py)
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
    stop_on_signals()
    if config_path:
        try:
            cfg = C.load(config_path)
        except C.ConfigError as e:
            raise Refused(f"config error: {e}") from None
        sizes = {c.name: (c.target_width, c.target_height) for c in cfg.cameras}
        if size is None and len(set(sizes.values())) > 1:
            differ = ", ".join(f"{name} {w}x{h}" for name, (w, h) in sizes.items())
            raise Refused(f"config error: {config_path}: the cameras' target sizes differ ({differ}); slarm-convert "
                          "writes one image size for every camera: make them equal, or give --size WxH")
        size = size or next(iter(sizes.values()))
        if repo_id is None and cfg.hub.push_to_hub:
            repo_id, private = cfg.hub.repo_id, private or cfg.hub.private
    convert(raw_dirs, dataset_dir, size=size or (256, 256), resize_mode=resize_mode, action=action,
            joint_units=joint_units, format=fmt, codec=codec or "libsvtav1", jpeg_quality=jpeg_quality,
            workers=workers, device=device, task=task, max_gap=max_gap, push_to_hub=repo_id, private=private,
            ray=ray_address,
            retry_command=shlex.join(["slarm-convert", *sys.argv[1:]]),
            warn=lambda text: click.echo(f"warning: {text}", err=True), note=click.echo)


def run() -> None:
    """The slarm-convert command: main(), then exit without Python's teardown of the modules
    LeRobot imports (torch's is slow, and frees memory the process gives back anyway). By then
    every file is closed and the dataset is in place or untouched."""
    run_command(main)


if __name__ == "__main__":
    run()
