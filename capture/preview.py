"""Live preview in Rerun: every camera (JPEG bytes logged as encoded images, no decoding here;
the standard Huffman tables written in where the camera left them out, see mjpeg.py) and the
state values. Runs on its own thread and only ever looks at the newest tick, so a
slow viewer drops preview frames, never recording ticks.
"""

from __future__ import annotations

import threading

from .episode_file import Tick
from .mjpeg import with_huffman_tables

MODES = ("spawn", "serve", "off")
MAX_RATE_HZ = 30.0


class Preview:
    def __init__(self, mode: str, state_names: list[str], cameras: list):
        self.mode = mode
        self.state_names = state_names
        self.cameras = cameras
        self.url: str | None = None
        self._latest: Tick | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.mode == "off":
            return
        import rerun as rr

        rr.init("slarm-capture")
        if self.mode == "spawn":
            rr.spawn(memory_limit="25%")
        else:
            grpc_url = rr.serve_grpc(server_memory_limit="256MB", newest_first=True)
            rr.serve_web_viewer(open_browser=False, connect_to=grpc_url)
            self.url = f"http://localhost:9090/?url={grpc_url}"
        self._thread = threading.Thread(target=self._run, name="preview", daemon=True)
        self._thread.start()

    def offer(self, tick: Tick) -> None:
        """Called from the sampling thread: keep a reference, wake the preview thread. O(1)."""
        self._latest = tick
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        import time

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
