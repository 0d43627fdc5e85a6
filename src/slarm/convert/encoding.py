"""Training images -> one video file per camera and episode, encoded as LeRobot's writer encodes.

No LeRobot import here: the workers that encode start while the main process is still
importing LeRobot, which takes seconds. LeRobot's encoder settings (lerobot.configs.video) are spelled
out below; tests/test_convert.py checks them against LeRobot's own for every codec offered.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# LeRobot's VideoEncoderConfig defaults: pixel format, GOP (keyframe interval), CRF, SVT-AV1 preset
PIX_FMT, GOP, CRF, SVTAV1_PRESET = "yuv420p", 2, 30, 12
CODECS = ("libsvtav1", "h264", "hevc", "h264_nvenc", "hevc_nvenc")
# Messages only, not the encoding: x265 prints ~30 lines per file on stderr (SVT-AV1: SVT_LOG)
QUIET = {"hevc": {"x265-params": "log-level=error"}}


def codec_options(codec: str, threads: int | None) -> dict[str, str]:
    """The FFmpeg options LeRobot's RGBEncoderConfig(vcodec=codec).get_codec_options(threads) gives."""
    opts = {"g": str(GOP)}
    if codec == "libsvtav1":
        opts |= {"crf": str(CRF), "preset": str(SVTAV1_PRESET),
                 "svtav1-params": "fast-decode=0" + (f":lp={threads}" if threads is not None else "")}
    elif codec in ("h264", "hevc"):
        opts["crf"] = str(CRF)
        if threads is not None:
            opts["threads"] = str(threads)
    elif codec in ("h264_nvenc", "hevc_nvenc"):
        opts |= {"rc": "0", "qp": str(CRF)}
    else:
        raise ValueError(f"unknown codec {codec!r}; one of {', '.join(CODECS)}")
    return opts


def encoder_options(codec: str, threads: int | None) -> dict[str, str]:
    """What the encoder is opened with: LeRobot's options, and no log chatter."""
    return codec_options(codec, threads) | QUIET.get(codec, {})


class SizeRefused(ValueError):
    """The encoder opens on this machine, but not for images of the size asked."""


def check_codec(codec: str, width: int = 64, height: int = 64) -> None:
    """Raises ValueError saying why `codec` cannot encode width x height images on this machine
    (SizeRefused when only the size is the problem). FFmpeg may list a hardware encoder
    (h264_nvenc) that fails to open without its GPU, and an encoder may refuse a size (libx264
    in yuv420p: odd sides), so open it once, as used."""
    for w, h in dict.fromkeys([(64, 64), (width, height)]):
        try:
            ctx = av.CodecContext.create(codec, "w")
            ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = w, h, PIX_FMT, Fraction(1, 30)
            ctx.options = encoder_options(codec, 1)
            ctx.open()
        except Exception as e:
            if (w, h) == (64, 64):
                raise ValueError(f"the encoder cannot be opened on this machine ({e})") from None
            raise SizeRefused(f"the encoder cannot be opened for {w}x{h} images ({e})") from None
        finally:
            normal_priority()


class VideoWriter:
    """One camera's frames of one episode -> an MP4 file. Frames are uint8 in rgb24, (H, W, 3),
    or in yuv420p, (H * 3/2, W), the encoder's own layout, which it takes without a conversion
    (frames.to_yuv420)."""

    def __init__(self, path: Path, fps: int, codec: str, threads: int | None):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps, self.codec, self.threads = path, fps, codec, threads
        self.container = av.open(str(path), "w")
        self.stream = None
        self.frames = 0

    def add(self, image: np.ndarray, layout: str = "rgb24") -> None:
        if self.stream is None:
            options = encoder_options(self.codec, self.threads)
            self.stream = self.container.add_stream(self.codec, self.fps, options=options)
            height = image.shape[0] * 2 // 3 if layout == "yuv420p" else image.shape[0]
            self.stream.pix_fmt, self.stream.width, self.stream.height = PIX_FMT, image.shape[1], height
            self.stream.time_base = Fraction(1, self.fps)
        frame = av.VideoFrame.from_ndarray(image, format=layout)
        frame.pts, frame.time_base = self.frames, Fraction(1, self.fps)
        self.container.mux(self.stream.encode(frame))
        if self.frames == 0:  # the encoder starts its threads on the first frame
            normal_priority()
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder and finish the file."""
        if self.stream is not None:
            self.container.mux(self.stream.encode())
        self.container.close()
        return self.path

    def abort(self) -> None:
        """Close after a failure; the file goes with the work folder."""
        try:
            self.close()  # flushing too keeps SVT-AV1 from complaining on stderr
        except Exception:  # already closed, or unusable anyway
            pass


def normal_priority() -> None:
    """Put every thread of this process back to normal scheduling. SVT-AV1, when run as root
    (as in most containers), switches the calling thread and its own ~16 threads to real-time
    SCHED_FIFO priority 99: they then starve every other process of the machine, including the
    one that writes the dataset."""
    if not hasattr(os, "sched_setscheduler"):
        return
    for tid in os.listdir("/proc/self/task"):
        try:
            if os.sched_getscheduler(int(tid)) != os.SCHED_OTHER:
                os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
        except OSError:  # the thread has ended
            pass
