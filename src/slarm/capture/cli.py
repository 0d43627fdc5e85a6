"""slarm-capture: record demonstrations into one raw HDF5 file per episode."""

from __future__ import annotations

import sys

import click

from slarm import config as C
from slarm.common import stop_on_signals
from slarm.errors import Refused, run_command

from .keys import Keys
from .preview import LOOPBACK, MODES
from .recorder import record
from .session import AutoEpisodes
from .status import Output


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The session's JSON config (see config.json).")
@click.option("--sim", is_flag=True, help="Use simulated hardware (SO-101 or gamepad, cameras) instead of real devices.")
@click.option("--episodes", type=click.IntRange(min=1), help="Record this many episodes by themselves, then quit.")
@click.option("--episode-time", type=click.FloatRange(min=0.1),
              help="Length of each automatic episode, in seconds of the clock (missed ticks do not lengthen it).")
@click.option("--preview", type=click.Choice(MODES), default=None,
              help="Rerun live view: spawn a viewer, serve one to a browser, or off. "
                   "Default: spawn with a display, serve without.")
@click.option("--preview-bind", default=LOOPBACK, show_default=True, metavar="ADDRESS",
              help="Where --preview serve listens. The default keeps it on this computer (reach it from another "
                   "over SSH, as the printed line shows); 0.0.0.0 lets anyone who can reach this computer watch the "
                   "cameras and the joints.")
def main(config_path, sim, episodes, episode_time, preview, preview_bind):
    """Record demonstrations: move the arm by hand (torque is off), or drive with a gamepad;
    every tick at the configured fps stores the joint radians (or the pad's axes) and each
    camera's latest frame as delivered, in {raw_dir}/{dataset_name}/episode_NNNNNN.h5.

    Keys: SPACE start/stop (stop saves), R discard the episode, ESC discard and quit.

    Exit status: 0 done; 1 failed (a device or the disk); 2 refused before any work (the
    config, the calibration, another session in the folder); 130 interrupted (Ctrl-C, SIGTERM,
    a closed terminal), saved episodes kept.

    \b
    Examples:
      slarm-capture --config config.json
      slarm-capture --config config.json --sim --episodes 2 --episode-time 5
    """
    out = Output()
    try:
        cfg = C.load(config_path)
    except C.ConfigError as e:
        raise Refused(f"config error: {e}") from None
    if (episodes is None) != (episode_time is None):
        raise Refused("--episodes and --episode-time go together, e.g. --episodes 5 --episode-time 20")
    auto = AutoEpisodes(episodes, episode_time) if episodes else None

    sys.setswitchinterval(0.001)  # hand the interpreter to the sampling thread promptly when it wakes
    stop_on_signals()
    keys = Keys()
    if auto is None and keys.start() == "none":
        raise Refused("no keyboard to control the session (no terminal, no display). "
                      "Run it in a terminal, or record hands-free with --episodes N --episode-time SECONDS")
    if auto is not None:
        keys.start()

    record(cfg, out, keys, sim=sim, auto=auto, preview=preview, preview_bind=preview_bind)


def run() -> None:
    """The slarm-capture command. It exits at once after main(): by then every episode file is
    saved or discarded, the devices are closed and the terminal is restored, and in Python's
    teardown rerun-sdk can wait for a viewer that died (it flushes its connection at exit),
    holding the session open after `done:`."""
    run_command(main)


if __name__ == "__main__":
    run()
