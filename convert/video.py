"""The video encoder LeRobot's writer streams frames into, tuned for offline conversion.

LeRobot's own StreamingVideoEncoder is made for live recording: it drops a frame when its queue
is full for 0.1 s, and it updates quantile histograms with every pixel of every frame (about
6 ms per 256x256 frame). Converting recorded episodes needs neither: a frame must never be lost,
and LeRobot's non-streaming writer already computes image stats on a sample of frames
(compute_stats.sample_indices). This encoder keeps LeRobot's protocol, codec options and output
file, waits instead of dropping, and computes the stats of the frames LeRobot samples (stats.py).
"""

from __future__ import annotations

import queue
import threading
from fractions import Fraction
import tempfile
from pathlib import Path

import av
import numpy as np
from lerobot.datasets.video_utils import StreamingVideoEncoder

from .stats import ImageStats


class EpisodeEncoder(StreamingVideoEncoder):
    """One episode of known length at a time; one encoder thread per camera."""

    def __init__(self, fps: int, rgb_encoder, frames: int, encoder_threads: int | None = None):
        super().__init__(fps=fps, rgb_encoder=rgb_encoder, encoder_threads=encoder_threads)
        self.frames = frames

    def start_episode(self, video_keys: list[str], temp_dir: Path, depth_video_keys=None) -> None:
        if self._episode_active:
            self.cancel_episode()
        for key in video_keys:
            path = Path(tempfile.mkdtemp(dir=temp_dir)) / f"{key.replace('/', '_')}_streaming.mp4"
            self._frame_queues[key] = queue.Queue(maxsize=self.queue_maxsize)
            self._result_queues[key] = queue.Queue(maxsize=1)
            self._stop_events[key] = threading.Event()
            self._video_paths[key] = path
            self._threads[key] = _CameraThread(
                path, self.fps, self._rgb_encoder, self._encoder_threads, ImageStats(self.frames),
                self._frame_queues[key], self._result_queues[key], self._stop_events[key])
            self._threads[key].start()
        self._episode_active = True

    def feed_frame(self, video_key: str, image: np.ndarray) -> None:
        """Blocks while the encoder is busy; never drops a frame."""
        thread = self._threads[video_key]
        while True:
            if not thread.is_alive():
                try:
                    _, msg = self._result_queues[video_key].get(timeout=5)
                except queue.Empty:
                    msg = "no reason given"
                raise RuntimeError(f"video encoder for {video_key} stopped: {msg}")
            try:
                self._frame_queues[video_key].put(image, timeout=1)
                return
            except queue.Full:
                continue


class _CameraThread(threading.Thread):
    def __init__(self, path, fps, cfg, threads, stats: ImageStats, frames, results, stop):
        super().__init__(daemon=True)
        self.path, self.fps, self.cfg, self.threads, self.stats = path, fps, cfg, threads, stats
        self.frames, self.results, self.stop = frames, results, stop

    def run(self) -> None:
        container = None
        try:
            container = av.open(str(self.path), "w")
            stream = None
            i = 0
            while not self.stop.is_set():
                try:
                    image = self.frames.get(timeout=1)
                except queue.Empty:
                    continue
                if image is None:
                    break
                if stream is None:
                    stream = container.add_stream(self.cfg.vcodec, self.fps,
                                                  options=self.cfg.get_codec_options(self.threads, as_strings=True))
                    stream.pix_fmt, stream.width, stream.height = self.cfg.pix_fmt, image.shape[1], image.shape[0]
                    stream.time_base = Fraction(1, self.fps)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, self.fps)
                container.mux(stream.encode(frame))
                self.stats.add(image)
                i += 1
            if stream is not None:
                container.mux(stream.encode())
            container.close()
            container = None
            self.results.put(("ok", self.stats.result()))
        except Exception as e:  # reported to the writer through feed_frame / finish_episode
            if container is not None:
                container.close()
            self.results.put(("error", str(e)))
