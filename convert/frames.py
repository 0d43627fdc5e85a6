"""Camera frames to training images: decode once, at the smallest JPEG scale that still covers
the target, then resize with area interpolation. RGB order, uint8, (H, W, 3)."""

from __future__ import annotations

import cv2
import numpy as np

from capture.mjpeg import with_huffman_tables

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


class UnreadableFrame(ValueError):
    """A stored camera frame that cannot be decoded (a damaged raw file)."""


def _decode_bgr(data: np.ndarray, scale: int) -> np.ndarray:
    """JPEG bytes -> BGR array (OpenCV's order), decoded at 1/scale of its size."""
    img = cv2.imdecode(data, _REDUCED[scale])
    if img is None:
        raise UnreadableFrame("not a decodable JPEG frame")
    return img


def crop_box(w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the centred region of a w x h frame with the target's aspect ratio."""
    s = min(w / width, h / height)
    cw, ch = round(width * s), round(height * s)
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def pad_box(w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) where a w x h frame, shrunk to fit, sits inside the letterboxed target."""
    s = min(width / w, height / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    return (width - nw) // 2, (height - nh) // 2, nw, nh


def fit(rgb: np.ndarray, width: int, height: int, mode: str = "stretch") -> np.ndarray:
    """Resize to width x height: stretch (ignore aspect), crop (centre), or pad (letterbox, black)."""
    h, w = rgb.shape[:2]
    if mode == "crop":
        x, y, cw, ch = crop_box(w, h, width, height)
        rgb = rgb[y : y + ch, x : x + cw]
    elif mode == "pad":
        x, y, nw, nh = pad_box(w, h, width, height)
        out = np.zeros((height, width, 3), np.uint8)
        out[y : y + nh, x : x + nw] = _resize(rgb, nw, nh)
        return out
    return _resize(rgb, width, height)


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return np.ascontiguousarray(rgb)
    shrinking = width <= rgb.shape[1] and height <= rgb.shape[0]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def to_image(frame: np.ndarray, width: int, height: int, mode: str, scale: int) -> np.ndarray:
    """A stored frame (JPEG bytes as a 1-D array, or RGB pixels) -> the training image. A JPEG
    is resized in the decoder's BGR order and turned to RGB at the (smaller) target size."""
    if frame.ndim == 1:
        return cv2.cvtColor(fit(_decode_bgr(frame, scale), width, height, mode), cv2.COLOR_BGR2RGB)
    return fit(frame, width, height, mode)


def training_images(ep, cameras, rows, settings):
    """For each grid slot, {camera: training image} of raw row rows[j]. A repeated tick reuses
    its image (same array) instead of decoding it again. On settings.device "cuda" the GPU
    decodes and resizes (training_images_torch)."""
    if settings.device != "cpu":
        yield from training_images_torch(ep, cameras, rows, settings, settings.device)
        return
    scales = {name: dct_scale(w, h, settings.width, settings.height, settings.resize_mode) for name, w, h in cameras}
    last: dict[str, tuple[int, np.ndarray]] = {}
    for row in rows:
        for cam, scale in scales.items():
            if cam not in last or last[cam][0] != row:
                try:
                    image = to_image(ep.frame(cam, int(row)), settings.width, settings.height, settings.resize_mode,
                                     scale)
                except UnreadableFrame as e:
                    raise UnreadableFrame(f"camera {cam}, frame {row}: {e}") from None
                last[cam] = (row, image)
        yield {cam: image for cam, (_, image) in last.items()}


def training_images_torch(ep, cameras, rows, settings, device: str = "cuda", batch: int = 32):
    """training_images, with JPEG decoding and area resizing done by torch/torchvision on `device`
    (nvJPEG on an NVIDIA GPU). Frames are decoded in batches of up to `batch` distinct rows."""
    rows = np.asarray(rows)
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        distinct = list(dict.fromkeys(int(r) for r in chunk))
        images = {name: dict(zip(distinct, _torch_images(ep, name, distinct, settings, device)))
                  for name, _, _ in cameras}
        for row in chunk:
            yield {name: images[name][int(row)] for name in images}


def _torch_images(ep, camera: str, rows: list[int], settings, device: str) -> list[np.ndarray]:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    frames = [ep.frame(camera, r) for r in rows]
    if frames[0].ndim == 1:  # JPEG bytes; nvJPEG is given the Huffman tables a webcam left out
        data = [torch.from_numpy(np.frombuffer(with_huffman_tables(f), np.uint8).copy()) for f in frames]
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as e:
            raise UnreadableFrame(f"camera {camera}, frames {rows[0]}-{rows[-1]}: not decodable JPEG ({e})") from None
        x = torch.stack(decoded)
    else:
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(device)
    h, w = x.shape[2:]
    width, height, mode = settings.width, settings.height, settings.resize_mode
    if mode == "crop":
        cx, cy, cw, ch = crop_box(w, h, width, height)
        x = x[:, :, cy : cy + ch, cx : cx + cw]
    if mode == "pad":
        px, py, nw, nh = pad_box(w, h, width, height)
        out = torch.zeros((x.shape[0], 3, height, width), dtype=torch.uint8, device=x.device)
        out[:, :, py : py + nh, px : px + nw] = _torch_resize(x, nw, nh)
    else:
        out = _torch_resize(x, width, height)
    return list(out.permute(0, 2, 3, 1).contiguous().cpu().numpy())


def _torch_resize(x, width: int, height: int):
    """(B, 3, H, W) uint8 -> (B, 3, height, width) uint8: area when shrinking, as cv2.INTER_AREA does."""
    import torch
    import torch.nn.functional as F

    if x.shape[3] == width and x.shape[2] == height:
        return x
    if width <= x.shape[3] and height <= x.shape[2]:
        y = F.interpolate(x.float(), size=(height, width), mode="area")
    else:
        y = F.interpolate(x.float(), size=(height, width), mode="bilinear", align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)
