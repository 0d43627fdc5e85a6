"""Replay one raw episode into Rerun: every camera frame and state value on the episode's own
timeline (seconds from its first tick, and the tick number). JPEG frames get the standard
Huffman tables where the camera left them out (slarm/mjpeg.py), so the viewer can decode them."""

from __future__ import annotations

from pathlib import Path

from slarm.mjpeg import with_huffman_tables
from slarm.raw import open_episode
from slarm.viewer import open_viewer


def replay(path: Path, save: Path | None = None) -> None:
    """Into Rerun's viewer (started if none is open; viewer.ViewerError if it cannot start), or
    into an .rrd file (`save`) to open later with `rerun FILE`."""
    import rerun as rr

    rr.init("slarm-inspect")
    if save is not None:
        rr.save(str(save))
    else:
        rr.connect_grpc(open_viewer(then="Write the replay to a file with --save FILE.rrd and open it where a "
                                    "viewer works (rerun FILE.rrd)").url)
    with open_episode(path) as ep:
        t0 = ep.timestamp[0]
        for i in range(ep.frame_count):
            rr.set_time("episode_time", duration=float(ep.timestamp[i] - t0))
            rr.set_time("tick", sequence=int(ep.tick_index[i]))
            for name, cam in ep.cameras.items():
                frame = ep.frame(name, i)
                if cam.encoding == "jpeg":
                    jpeg = with_huffman_tables(frame)
                    rr.log(f"camera/{name}", rr.EncodedImage(contents=jpeg, media_type="image/jpeg"))
                else:
                    rr.log(f"camera/{name}", rr.Image(frame))
            for j, name in enumerate(ep.state_names):
                rr.log(f"state/{name}", rr.Scalars(float(ep.state[i, j])))
    rr.disconnect()
