"""The sampling thread: one tick every 1/fps seconds, on a fixed schedule.

Each tick reads the state source and takes the newest frame of every camera, stamps the
tick, and hands it on. Nothing else happens here: no decoding, no resizing, no encoding,
no disk I/O. Deadlines are `start + k / fps`, so sleeping late never shifts the schedule;
a tick that could not start before the next deadline is skipped and counted, never hidden.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from slarm.raw import Tick


class Sampler:
    def __init__(self, read_state: Callable, cameras: list, fps: int, on_tick: Callable[[Tick], None],
                 on_fault: Callable[[Exception], None]):
        self.read_state = read_state
        self.cameras = cameras
        self.period = 1.0 / fps
        self.on_tick = on_tick
        self.on_fault = on_fault
        self.missed_ticks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        start = time.monotonic()
        k = 0
        while not self._stop.is_set():
            deadline = start + k * self.period
            now = time.monotonic()
            if now < deadline:
                time.sleep(deadline - now)
                now = time.monotonic()
            late = int((now - deadline) / self.period)
            if late:  # the deadlines we slept through are missed ticks
                self.missed_ticks += late
                k += late
            try:
                state = self.read_state()
                frames = {cam.name: cam.latest() for cam in self.cameras}
            except Exception as e:  # a device failed: the session decides what to do
                self.on_fault(e)
                return
            self.on_tick(Tick(index=k, time=now, state=state, frames=frames))
            k += 1
