"""Camera frames to training images: decode once, at the smallest JPEG scale that still covers
the target, then resize with area interpolation. uint8, in one of two layouts (PyAV's names):
rgb24, (H, W, 3) in RGB order; or yuv420p, the video encoder's own input, (H * 3/2, W): the Y
plane, then U, then V at half the width and height (BT.601, limited range, as FFmpeg turns RGB
into yuv420p for LeRobot's encoder)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

import cv2
import numpy as np

from slarm.mjpeg import with_huffman_tables

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
    """A stored camera frame that cannot be decoded; raised for an episode with too many of them
    (a damaged raw file), see Undecodable."""


MAX_UNDECODABLE = 0.1  # the share of a camera's frames in an episode that may be replaced


class Undecodable:
    """The frames of one episode that cannot be decoded, camera by camera: a USB camera can send
    a broken JPEG now and then (a busy bus), and the driver may hand it over. Each is replaced by
    the camera's frame before it (at the start of the episode: the first one after it that
    decodes), as if the camera had skipped a frame. More than MAX_UNDECODABLE of a camera's
    frames is a damaged file: UnreadableFrame."""

    def __init__(self, frames: int):
        self.frames = frames
        self.rows: dict[str, list[int]] = {}  # camera -> raw frame numbers replaced

    def stand_in(self, cam: str, rows: list[int], before: np.ndarray | None, after, decode) -> np.ndarray:
        """The image for raw frames `rows` of `cam` (one camera frame, which the camera may have
        given to several ticks), which did not decode: `before`, the camera's last image, else
        the image of the first of the raw frames `after` (the grid's next rows, in order, repeats
        included; read only then) that decodes (decode(cam, row) gives None for one that does not)."""
        noted = self.rows.setdefault(cam, [])
        noted += rows
        if len(noted) > self.frames * MAX_UNDECODABLE:
            raise UnreadableFrame(f"camera {cam}: frames {', '.join(map(str, noted[:5]))}"
                                  f"{', ...' if len(noted) > 5 else ''} cannot be decoded (over "
                                  f"{MAX_UNDECODABLE:.0%} of its {self.frames} frames)")
        if before is not None:
            return before
        tried = rows[0]
        for later in map(int, after):
            if later != tried:  # a repeated tick: the same frame again
                tried, image = later, decode(cam, later)
                if image is not None:
                    return image
        raise UnreadableFrame(f"camera {cam}: no frame can be decoded")


def _decode_bgr(data: np.ndarray, scale: int) -> np.ndarray:
    """JPEG bytes -> BGR array (OpenCV's order), decoded at 1/scale of its size. A frame the
    decoder finds corrupt (it still gives an image, grey or smeared where the data broke) is
    UnreadableFrame, as one it cannot decode at all."""
    if not len(data):  # OpenCV raises on no bytes at all
        raise UnreadableFrame("no bytes")
    with decoder_messages() as said:
        img = cv2.imdecode(data, _REDUCED[scale])
    if img is None:
        raise UnreadableFrame("not a decodable JPEG frame")
    if said:
        raise UnreadableFrame(said[0])
    return img


def decode_problem(data: np.ndarray) -> str | None:
    """Why a stored JPEG frame is one that slarm-convert replaces (it does not decode, or its
    decoder reports corrupt data), or None for a good one. Decodes at 1/8 scale: the entropy-
    coded data is read whole at any scale."""
    try:
        _decode_bgr(data, 8)
    except UnreadableFrame as e:
        return str(e)
    return None


# libjpeg's warnings (jerror.h): those that mean the frame's data is damaged, and the rest
_CORRUPT = ("Corrupt JPEG data", "Premature end of JPEG file")
_HARMLESS = ("Invalid SOS parameters", "Warning: unknown JFIF", "Unknown Adobe color transform",
             "Inconsistent progression sequence", "Application transferred too many scanlines")
_scratch: tuple[int, int] | None = None  # (pid, fd of an unlinked file) that takes the decoder's messages


@contextmanager
def decoder_messages():
    """Collect what libjpeg says while a frame decodes: its warnings for corrupt data ("Corrupt
    JPEG data: premature end of data segment", "... bad Huffman code") are the only sign of a
    frame with damaged data, since it still gives an image. OpenCV lets libjpeg print them to
    the process's stderr, so the stderr descriptor points at a file of this process's own for
    the decode (a file, not a pipe: nothing can block). The list yielded gets the corrupt-data
    messages; other lines written meanwhile (another thread's) go on to stderr."""
    global _scratch
    if _scratch is None or _scratch[0] != os.getpid():  # a forked worker gets a file of its own
        fd, name = tempfile.mkstemp(prefix="slarm-decoder-")
        os.unlink(name)
        _scratch = (os.getpid(), fd)
    fd = _scratch[1]
    said: list[str] = []
    saved = os.dup(2)
    os.dup2(fd, 2)
    try:
        yield said
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        size = os.lseek(fd, 0, os.SEEK_CUR)
        if size:
            os.lseek(fd, 0, os.SEEK_SET)
            lines = os.read(fd, size).decode(errors="replace").splitlines()
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            said += [line.strip() for line in lines if line.startswith(_CORRUPT)]
            others = [line for line in lines if not line.startswith(_CORRUPT + _HARMLESS)]
            if others:
                os.write(2, ("\n".join(others) + "\n").encode())


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


def to_yuv420(frame: np.ndarray, width: int, height: int, mode: str, scale: int) -> np.ndarray:
    """to_image, in the encoder's yuv420p layout (even width and height). The colours are
    converted at the decoded size, before the resize, which then works on 1.5 values a pixel
    instead of RGB's 3, and the encoder needs no conversion (docs/benchmarks.md). Letterboxing, and a region with an odd side, are
    resized in RGB and converted at the target size."""
    if frame.ndim == 1:
        image, code = _decode_bgr(frame, scale), cv2.COLOR_BGR2YUV_I420
    else:
        image, code = frame, cv2.COLOR_RGB2YUV_I420
    if mode == "crop":
        x, y, cw, ch = crop_box(image.shape[1], image.shape[0], width, height)
        image = image[y : y + ch, x : x + cw]
    h, w = image.shape[:2]
    if mode == "pad" or h % 2 or w % 2:
        return cv2.cvtColor(fit(image, width, height, "pad" if mode == "pad" else "stretch"), code)
    planes = cv2.cvtColor(np.ascontiguousarray(image), code).reshape(-1)
    out = np.empty((height * 3 // 2, width), np.uint8)
    luma, chroma = w * h, w * h // 4
    out[:height] = _resize(planes[:luma].reshape(h, w), width, height)
    for k in range(2):  # U, then V
        plane = planes[luma + k * chroma : luma + (k + 1) * chroma].reshape(h // 2, w // 2)
        start = width * height + k * (width * height // 4)
        out.reshape(-1)[start : start + width * height // 4] = _resize(plane, width // 2, height // 2).reshape(-1)
    return out


def yuv420_to_rgb(image: np.ndarray) -> np.ndarray:
    """A yuv420p training image in rgb24."""
    return cv2.cvtColor(image, cv2.COLOR_YUV2RGB_I420)


def training_images(ep, cameras, rows, settings, undecodable: Undecodable | None = None, layout: str = "rgb24"):
    """For each grid slot, {camera: training image} of raw row rows[j], in `layout` (rgb24 or
    yuv420p). A camera frame shown at several ticks is decoded once and its image (the same
    array) reused (frame_rows). A frame that cannot be decoded is replaced and noted in
    `undecodable`. On settings.device "cuda" the GPU decodes and resizes (training_images_torch)."""
    undecodable = Undecodable(ep.frame_count) if undecodable is None else undecodable
    if settings.device != "cpu":
        for images in training_images_torch(ep, cameras, rows, settings, settings.device, undecodable=undecodable):
            yield images if layout == "rgb24" else {c: cv2.cvtColor(i, cv2.COLOR_RGB2YUV_I420) for c, i in images.items()}
        return
    convert = to_image if layout == "rgb24" else to_yuv420
    scales = {name: dct_scale(w, h, settings.width, settings.height, settings.resize_mode) for name, w, h in cameras}
    shown = {cam: frame_rows(ep, cam, rows) for cam in scales}

    def decode(cam: str, row: int) -> np.ndarray | None:
        try:
            frame = ep.frame(cam, row)
        except (OSError, ValueError):  # its bytes cannot be read (a damaged heap ID): as a broken frame
            return None
        try:
            return convert(frame, settings.width, settings.height, settings.resize_mode, scales[cam])
        except UnreadableFrame:
            return None

    images: dict[str, np.ndarray] = {}  # camera -> its image of raw frame shown[camera][j]
    for j in range(len(rows)):
        for cam in scales:
            row = int(shown[cam][j])
            if j == 0 or shown[cam][j - 1] != row:  # else the image of the slot before
                image = decode(cam, row)
                if image is None:
                    image = undecodable.stand_in(cam, showing(rows, shown[cam], row), images.get(cam),
                                                 shown[cam][j + 1 :], decode)
                images[cam] = image
        yield dict(images)


def frame_rows(ep, camera: str, rows) -> np.ndarray:
    """For each of `rows`, the first of the consecutive rows that hold the same camera frame, so
    that each frame is decoded once. A tick repeated on the time grid (a missed tick) is one; so
    are ticks the camera gave no new frame, as a camera slower than the ticks does (auto exposure
    in dim light, a 15 fps camera in a 30 fps recording): same frame number, and the same bytes,
    which are checked."""
    rows = np.asarray(rows, dtype=np.int64)
    first = rows.copy()
    seq = ep.cameras[camera].frame_seq[rows]
    for j in np.flatnonzero(seq[1:] == seq[:-1]) + 1:
        if np.array_equal(ep.frame(camera, first[j - 1]), ep.frame(camera, rows[j])):
            first[j] = first[j - 1]
    return first


def showing(rows, shown: np.ndarray, row: int) -> list[int]:
    """The raw frames whose image is that of raw frame `row` (frame_rows): itself, and those to
    which the camera gave that frame again."""
    return np.unique(np.asarray(rows)[shown == row]).tolist()


def training_images_torch(ep, cameras, rows, settings, device: str = "cuda", batch: int = 32,
                          undecodable: Undecodable | None = None):
    """training_images, with JPEG decoding and area resizing done by torch/torchvision on `device`
    (nvJPEG on an NVIDIA GPU). Frames are decoded in batches: those of up to `batch` grid slots."""
    undecodable = Undecodable(ep.frame_count) if undecodable is None else undecodable
    shown = {name: frame_rows(ep, name, rows) for name, _, _ in cameras}
    held: dict[str, tuple[int, np.ndarray]] = {}  # camera -> its last raw frame and image

    def decode(cam: str, row: int) -> np.ndarray | None:
        return _torch_images(ep, cam, [row], settings, device)[0]

    for start in range(0, len(rows), batch):
        images = {}
        for name in shown:
            chunk = shown[name][start : start + batch].tolist()
            images[name] = dict([held[name]]) if name in held else {}
            new = [row for row in dict.fromkeys(chunk) if row not in images[name]]
            for row, image in zip(new, _torch_images(ep, name, new, settings, device) if new else []):
                if image is None:
                    after = shown[name][start + chunk.index(row) + 1 :]
                    before = held[name][1] if name in held else None
                    image = undecodable.stand_in(name, showing(rows, shown[name], row), before, after, decode)
                images[name][row] = image
                held[name] = (row, image)
        for j in range(start, min(start + batch, len(rows))):
            yield {name: images[name][int(shown[name][j])] for name in images}


_decoder = None  # in a worker with --device cuda: its decoder process (gpu_decoder.Remote)


def _torch_images(ep, camera: str, rows: list[int], settings, device: str) -> list[np.ndarray | None]:
    """The training images of raw frames `rows`; None for a frame that cannot be decoded. In a
    worker given a decoder process, that process decodes them; else this one, on `device`."""
    frames = [ep.frame(camera, r) for r in rows]
    if _decoder is not None:
        return _decoder.decode_resize(frames, settings)
    return decode_resize(frames, settings, device)


def decode_resize(frames: list[np.ndarray], settings, device: str) -> list[np.ndarray | None]:
    """Stored frames (JPEG bytes as 1-D arrays, or RGB pixels) -> training images (rgb24) by
    torch/torchvision on `device`, as one batch; None for a frame that cannot be decoded."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if frames[0].ndim == 1:  # JPEG bytes; nvJPEG is given the Huffman tables a webcam left out
        data = [torch.from_numpy(np.frombuffer(with_huffman_tables(f), np.uint8).copy()) for f in frames]
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one of them does not decode: which?
            if len(frames) > 1:
                return [image for f in frames for image in decode_resize([f], settings, device)]
            return [None]
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
