"""A recording session from devices to episode files: open the devices (real or simulated), run
the session, close everything, whatever happens. slarm-capture is a thin command line over
`record`; the end of a session that stopped early is said in its place among the session's
lines (before its `done:` line), and raised after the devices are closed as a slarm.errors
exception carrying the exit status.
"""

from __future__ import annotations

from slarm.common import count
from slarm.config import Config
from slarm.errors import Interrupted, SlarmError
from slarm.viewer import ViewerError

from .arm import SO101Arm
from .cameras import make_camera
from .gamepad import Gamepad
from .keys import Keys, has_display
from .preview import LOOPBACK, Preview
from .session import AutoEpisodes, RecordingError, Session
from .state_source import StateSource
from .status import Output


def record(cfg: Config, out: Output, keys: Keys, *, sim: bool = False, auto: AutoEpisodes | None = None,
           preview: str | None = None, preview_bind: str = LOOPBACK) -> int:
    """Record episodes as `cfg` says, driven by `keys` (or `auto`); returns how many were saved.
    Raises SessionError or CalibrationError (refused before recording), a device's error, or
    RecordingError and Interrupted (already said, after the session's summary line)."""
    rig = None
    source: StateSource | None = None  # the arm or the gamepad
    cameras = []
    stopped: SlarmError | None = None
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
            stopped = Interrupted("interrupted", shown=True)
        except RecordingError as e:
            out.error(str(e))
            e.shown, stopped = True, e
        out.close()
        saved = count(session.saved, "episode")
        out.message(f"done: {saved} saved, {session.discarded} discarded, in {cfg.episodes_dir}")
    except SlarmError as e:  # a device, the calibration, the raw folder: before recording started
        out.error(str(e))
        e.shown = True
        raise
    except KeyboardInterrupt:
        out.message("interrupted before recording started")
        raise Interrupted("interrupted", shown=True) from None
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
    if stopped is not None:
        raise stopped
    return session.saved
