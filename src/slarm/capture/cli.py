"""slarm-capture: record demonstrations into one raw HDF5 file per episode."""

from __future__ import annotations

import sys

import click

from slarm import config as C
from slarm.capture.arm import ArmError, CalibrationError, SO101Arm
from slarm.capture.status import Output
from slarm.common import count, stop_on_signals
from slarm.errors import run_command
from slarm.viewer import ViewerError

from .cameras import CameraError, make_camera
from .gamepad import Gamepad, GamepadError
from .keys import Keys, has_display
from .preview import LOOPBACK, MODES, Preview
from .session import AutoEpisodes, RecordingError, Session, SessionError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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
        _fail(out, f"config error: {e}", EXIT_USAGE)
    if (episodes is None) != (episode_time is None):
        _fail(out, "--episodes and --episode-time go together, e.g. --episodes 5 --episode-time 20", EXIT_USAGE)
    auto = AutoEpisodes(episodes, episode_time) if episodes else None

    sys.setswitchinterval(0.001)  # hand the interpreter to the sampling thread promptly when it wakes
    stop_on_signals()
    keys = Keys()
    if auto is None and keys.start() == "none":
        _fail(out, "no keyboard to control the session (no terminal, no display). "
                   "Run it in a terminal, or record hands-free with --episodes N --episode-time SECONDS", EXIT_USAGE)
    if auto is not None:
        keys.start()

    rig = None
    source = None  # the state source: the arm or the gamepad
    cameras = []
    code = EXIT_OK
    try:
        if sim:
            from .sim import SimRig

            rig = SimRig(cfg)
            source = rig.gamepad() if cfg.robot.type == "gamepad" else rig.arm()
            cameras = [rig.camera(c, cfg.camera_fps(c)) for c in cfg.cameras]
        else:
            source = Gamepad(cfg.robot) if cfg.robot.type == "gamepad" else SO101Arm(cfg.robot)
            cameras = [make_camera(c, cfg.camera_fps(c)) for c in cfg.cameras]

        session = Session(cfg, source, cameras, out, keys, preview=None, auto=auto)
        session.prepare()

        source.connect()
        out.message(source.describe())
        for cam in cameras:
            cam.connect()
            out.message(cam.describe())
        if rig is not None:
            out.message(rig.describe())

        mode = preview or ("spawn" if has_display() else "serve")
        session.preview = Preview(mode, list(source.state_names), cameras, bind=preview_bind)
        try:
            session.preview.start()
        except ViewerError as e:
            out.warning(f"no live preview: {e}; recording goes on without it")
            session.preview = Preview("off", [], [])
        except Exception as e:  # rerun-sdk failing in a way of its own
            out.warning(f"no live preview ({e}); recording goes on without it")
            session.preview = Preview("off", [], [])
        if session.preview.url:
            out.message(f"live preview: open {session.preview.url} in a browser; {session.preview.ssh_hint()}")
            if not session.preview.local:
                out.warning(f"the live preview listens on {preview_bind}: anyone who can reach this computer there "
                            "can watch the cameras and the joints (leave out --preview-bind to keep it on this computer)")

        try:
            session.run()
        except KeyboardInterrupt:
            out.message("interrupted: the current episode (if any) is discarded, saved episodes are kept")
            code = EXIT_INTERRUPTED
        except RecordingError as e:
            out.error(str(e))
            code = EXIT_FAILURE
        out.close()
        saved = count(session.saved, "episode")
        out.message(f"done: {saved} saved, {session.discarded} discarded, in {cfg.episodes_dir}")
    except CalibrationError as e:
        out.error(str(e))
        code = EXIT_USAGE
    except SessionError as e:
        out.error(str(e))
        code = EXIT_USAGE
    except (ArmError, GamepadError, CameraError) as e:
        out.error(str(e))
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        out.message("interrupted before recording started")
        code = EXIT_INTERRUPTED
    finally:
        keys.stop()
        if "session" in locals() and session.preview is not None and (problem := session.preview.stop()):
            out.warning(problem)
        if source is not None:
            source.disconnect()  # arm: torque off, port closed
        for cam in cameras:
            cam.disconnect()
        if rig is not None:
            rig.close()
    sys.exit(code)


def _fail(out: Output, message: str, code: int):
    out.error(message)
    sys.exit(code)


def run() -> None:
    """The slarm-capture command. It exits at once after main(): by then every episode file is
    saved or discarded, the devices are closed and the terminal is restored, and in Python's
    teardown rerun-sdk can wait for a viewer that died (it flushes its connection at exit),
    holding the session open after `done:`."""
    run_command(main)


if __name__ == "__main__":
    run()
