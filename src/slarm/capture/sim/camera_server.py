"""A simulated USB camera in MJPG mode, as its own process.

It serves pre-encoded JPEG frames (encoded once, cached on disk) over a Unix socket at its
frame rate, each stamped with its frame number and capture time (time.monotonic, which is
system-wide), and sent without Huffman tables, as many USB webcams send MJPEG (see
slarm/mjpeg.py). Every frame shows its counter as text and as a barcode strip along the
bottom edge (one block per bit, readable after any resize), so tests can tell which frame
ended up where. While the file given as --dim-file exists, the camera sends half its frame
rate, as a USB camera on auto exposure does in dim light.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np

from slarm.common import alive as _alive
from slarm.mjpeg import without_huffman_tables

HEADER = struct.Struct("<qdI")  # frame number, capture time, JPEG length
FRAMES = 128  # distinct frames; the counter shown is the frame number modulo this
BARCODE_BITS = 7
CACHE_VERSION = 1


def barcode_value(rgb: np.ndarray) -> int:
    """Read the counter back from a decoded frame (any size): the bottom strip, one block per bit."""
    h, w = rgb.shape[:2]
    strip = rgb[int(h * 0.94) :, :, :].mean(axis=(0, 2))
    value = 0
    for bit in range(BARCODE_BITS):
        a, b = int(w * bit / BARCODE_BITS), int(w * (bit + 1) / BARCODE_BITS)
        block = strip[a + (b - a) // 4 : b - (b - a) // 4]
        value |= int(block.mean() > 127) << bit
    return value


def render(k: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A desk-like scene (BGR) with noise texture, a moving object, the counter and its barcode."""
    import cv2

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 90 + 60 * x / width
    img[..., 1] = 110 + 50 * y / height
    img[..., 2] = 140 + 40 * (x + y) / (width + height)
    img += rng.normal(0, 5, size=(height // 6 + 1, width // 6 + 1, 1)).repeat(6, 0).repeat(6, 1)[:height, :width]
    img += rng.normal(0, 1.0, size=img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    phase = 2 * np.pi * k / FRAMES
    cx, cy = int(width * (0.5 + 0.3 * np.cos(phase))), int(height * (0.45 + 0.2 * np.sin(phase)))
    cv2.circle(img, (cx, cy), height // 10, (40, 40, 200), -1)
    cv2.rectangle(img, (width // 10, height // 2), (width // 10 + height // 6, height // 2 + height // 6), (60, 160, 60), -1)
    scale = height / 360
    cv2.putText(img, f"frame {k:03d}", (width // 40, int(height * 0.12)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
    top = int(height * 0.94)
    for bit in range(BARCODE_BITS):
        a, b = int(width * bit / BARCODE_BITS), int(width * (bit + 1) / BARCODE_BITS)
        img[top:, a:b] = 255 if (k >> bit) & 1 else 0
    return img


def encoded_frames(width: int, height: int, quality: int = 90) -> list[bytes]:
    """The FRAMES JPEGs, from the disk cache when there."""
    import cv2

    cache_dir = Path(os.environ.get("SLARM_CACHE", Path.home() / ".cache" / "slarm"))
    cache = cache_dir / f"sim_camera_v{CACHE_VERSION}_{width}x{height}_q{quality}.npz"
    if cache.exists():
        try:
            with np.load(cache) as z:
                blob, ends = z["blob"], z["ends"]
            starts = np.concatenate([[0], ends[:-1]])
            return [blob[s:e].tobytes() for s, e in zip(starts, ends)]
        except Exception:
            pass  # unreadable cache: make it again
    rng = np.random.default_rng(0)
    frames = []
    for k in range(FRAMES):
        ok, jpg = cv2.imencode(".jpg", render(k, width, height, rng), [cv2.IMWRITE_JPEG_QUALITY, quality])
        frames.append(jpg.tobytes())
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, blob=np.frombuffer(b"".join(frames), np.uint8), ends=np.cumsum([len(f) for f in frames]))
    tmp.replace(cache)
    return frames


def serve(sock_path: Path, width: int, height: int, fps: int, parent_pid: int | None,
          dim_file: Path | None = None) -> None:
    frames = [without_huffman_tables(f) for f in encoded_frames(width, height)]
    sock_path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    server.settimeout(0.5)
    print("ready", flush=True)
    period, seq, t0 = 1.0 / fps, 0, time.monotonic()
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            if parent_pid and not _alive(parent_pid):
                return
            continue
        with conn:
            try:
                while True:
                    step = 2 if dim_file is not None and dim_file.exists() else 1  # dim: longer exposures
                    seq = max(seq + step, int((time.monotonic() - t0) / period))
                    deadline = t0 + seq * period
                    delay = deadline - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    jpg = frames[seq % FRAMES]
                    conn.sendall(HEADER.pack(seq, time.monotonic(), len(jpg)) + jpg)
            except (BrokenPipeError, ConnectionResetError):
                continue  # the client went away; wait for the next one



def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", type=Path, required=True)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--parent-pid", type=int)
    p.add_argument("--dim-file", type=Path, help="while this file exists, send half the frame rate")
    a = p.parse_args(argv)
    try:
        serve(a.socket, a.width, a.height, a.fps, a.parent_pid, a.dim_file)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
