"""Replay one raw episode into Rerun: every camera frame and state value on the episode's own
timeline (seconds from its first tick, and the tick number)."""

from __future__ import annotations

from pathlib import Path

from capture.episode_file import open_episode


def replay(path: Path, save: Path | None = None) -> None:
    """Into a spawned viewer, or into an .rrd file (`save`) to open later with `rerun FILE`."""
    import rerun as rr

    rr.init("slarm-inspect", spawn=save is None)
    if save is not None:
        rr.save(str(save))
    with open_episode(path) as ep:
        t0 = ep.timestamp[0]
        for i in range(ep.frame_count):
            rr.set_time("episode_time", duration=float(ep.timestamp[i] - t0))
            rr.set_time("tick", sequence=int(ep.tick_index[i]))
            for name, cam in ep.cameras.items():
                frame = ep.frame(name, i)
                if cam.encoding == "jpeg":
                    rr.log(f"camera/{name}", rr.EncodedImage(contents=frame, media_type="image/jpeg"))
                else:
                    rr.log(f"camera/{name}", rr.Image(frame))
            for j, name in enumerate(ep.state_names):
                rr.log(f"state/{name}", rr.Scalars(float(ep.state[i, j])))
    rr.disconnect()
