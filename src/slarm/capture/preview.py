"""Live preview in Rerun: every camera (JPEG bytes logged as encoded images, no decoding here;
the standard Huffman tables written in where the camera left them out, see mjpeg.py) and the
state values. Runs on its own thread and only ever looks at the newest tick, so a
slow viewer drops preview frames, never recording ticks. The viewer or the web server is a
process of its own (viewer.py).
"""

from __future__ import annotations

import threading
import time

from slarm import viewer
from slarm.mjpeg import with_huffman_tables
from slarm.raw import Tick

MODES = ("spawn", "serve", "off")
MAX_RATE_HZ = 30.0
LOOPBACK = viewer.LOOPBACK


class Preview:
    def __init__(self, mode: str, state_names: list[str], cameras: list, bind: str = LOOPBACK):
        self.mode = mode
        self.state_names = state_names
        self.cameras = cameras
        self.bind = bind  # where `serve` listens: this computer only, unless the user asks
        self.url: str | None = None
        self._process: viewer.Process | None = None
        self._latest: Tick | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def local(self) -> bool:
        """Whether only this computer can open the preview."""
        return self.mode != "serve" or viewer.is_loopback(self.bind)

    def start(self) -> None:
        """Start the viewer (spawn) or the web server (serve). ViewerError when it cannot start."""
        if self.mode == "off":
            return
        import rerun as rr

        if self.mode == "spawn":
            self._process = viewer.open_viewer()
        else:
            self._process = viewer.serve(self.bind)
            self.url = self._process.url
        rr.init("slarm-capture")
        rr.connect_grpc(self._process.url if self.mode == "spawn" else viewer.data_url())
        self._thread = threading.Thread(target=self._run, name="preview", daemon=True)
        self._thread.start()

    def ssh_hint(self) -> str:
        """How to open the served preview from another computer (over SSH, as this one is often used)."""
        web, grpc = viewer.WEB_PORT, viewer.GRPC_PORT
        return (f"from another computer: ssh -L {web}:localhost:{web} -L {grpc}:localhost:{grpc} "
                f"{viewer.ssh_login()}, then open the same URL there")

    def offer(self, tick: Tick) -> None:
        """Called from the sampling thread: keep a reference, wake the preview thread. O(1)."""
        self._latest = tick
        self._wake.set()

    def stop(self) -> str | None:
        """Stop logging (the spawned viewer stays open; the server goes). What went wrong with
        the viewer meanwhile, if it ended with an error."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._process is None:
            return None
        died = self._process.died()
        if died is None:
            import rerun as rr

            rr.disconnect()  # before a server goes: no errors from a severed connection at exit
        if self.mode == "serve":
            self._process.stop()
        elif died is None:
            self._process.forget_log()
        self._process = None
        return died and f"the Rerun viewer ended with an error: {died}"

    def _run(self) -> None:
        import rerun as rr

        encodings = {c.name: c.encoding for c in self.cameras}
        last = 0.0
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            tick = self._latest
            if tick is None or self._stop.is_set():
                continue
            now = time.monotonic()
            if now - last < 1.0 / MAX_RATE_HZ:
                continue
            last = now
            rr.set_time("capture_time", duration=tick.time)
            for name, frame in tick.frames.items():
                if encodings[name] == "jpeg":
                    jpeg = with_huffman_tables(frame.data)
                    rr.log(f"camera/{name}", rr.EncodedImage(contents=jpeg, media_type="image/jpeg"))
                else:
                    rr.log(f"camera/{name}", rr.Image(frame.data))
            for name, value in zip(self.state_names, tick.state.tolist()):
                rr.log(f"state/{name}", rr.Scalars(value))
