"""Camera frames to training images: decode once, at the smallest JPEG scale that still covers
the target, then resize with area interpolation. RGB order, uint8, (H, W, 3)."""

from __future__ import annotations

import cv2
import numpy as np

RESIZE_MODES = ("stretch", "crop", "pad")
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def dct_scale(src_w: int, src_h: int, dst_w: int, dst_h: int, mode: str) -> int:
    """The largest JPEG DCT scale (1, 2, 4, 8) whose decoded image still has at least the target's pixels
    in the region that is kept."""
    if mode == "crop":
        side = min(src_w / dst_w, src_h / dst_h)
        need_w, need_h = dst_w * side, dst_h * side  # the kept region, in source pixels
        ratio = min(need_w / dst_w, need_h / dst_h)
    elif mode == "pad":
        ratio = max(src_w / dst_w, src_h / dst_h)  # the whole frame shrinks into the target
    else:
        ratio = min(src_w / dst_w, src_h / dst_h)
    for scale in (8, 4, 2):
        if ratio >= scale:
            return scale
    return 1


def decode_jpeg(data: bytes, scale: int = 1) -> np.ndarray:
    """JPEG bytes -> RGB array, decoded at 1/scale of its size."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[scale])
    if img is None:
        raise ValueError("not a decodable JPEG frame")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def fit(rgb: np.ndarray, width: int, height: int, mode: str = "stretch") -> np.ndarray:
    """Resize to width x height: stretch (ignore aspect), crop (centre), or pad (letterbox, black)."""
    h, w = rgb.shape[:2]
    if mode == "crop":
        s = min(w / width, h / height)
        cw, ch = round(width * s), round(height * s)
        x, y = (w - cw) // 2, (h - ch) // 2
        rgb = rgb[y : y + ch, x : x + cw]
    elif mode == "pad":
        s = min(width / w, height / h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        out = np.zeros((height, width, 3), np.uint8)
        x, y = (width - nw) // 2, (height - nh) // 2
        out[y : y + nh, x : x + nw] = _resize(rgb, nw, nh)
        return out
    return _resize(rgb, width, height)


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return np.ascontiguousarray(rgb)
    shrinking = width <= rgb.shape[1] and height <= rgb.shape[0]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def to_image(frame: bytes | np.ndarray, width: int, height: int, mode: str, scale: int) -> np.ndarray:
    """A stored frame (JPEG bytes or RGB pixels) -> the training image."""
    rgb = decode_jpeg(frame, scale) if isinstance(frame, bytes) else frame
    return fit(rgb, width, height, mode)
