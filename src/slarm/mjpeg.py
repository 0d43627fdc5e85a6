"""JPEG frames from USB cameras in MJPG mode, which often leave out their Huffman tables.

The UVC payload format for MJPEG makes the DHT segment optional: a frame without one is coded
with the standard tables of ISO 10918-1, annex K.3, and many webcams save the bytes. Such
frames are stored as delivered. libjpeg-turbo (OpenCV, Pillow, torchvision on the CPU) decodes
them; decoders that do not know the convention (some GPU, browser and image-library ones)
refuse them. `with_huffman_tables()` writes the standard tables into such a frame for those
decoders; the pixels do not change.
"""

from __future__ import annotations

from functools import cache

SOS, DHT = 0xDA, 0xC4
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # markers without a length field: TEM, RST0-7


def with_huffman_tables(jpeg):
    """The frame, with the standard Huffman tables inserted before its scan when it has none
    (bytes); otherwise the frame itself, unchanged and not copied."""
    head = memoryview(jpeg).cast("B")
    i = _scan_start(head)
    if i is None:
        return jpeg
    return b"".join((head[:i], standard_tables(), head[i:]))


def without_huffman_tables(jpeg: bytes) -> bytes:
    """The frame with its DHT segments removed, as such a camera sends it (the simulated camera;
    the tables must be the standard ones for the frame to stay decodable)."""
    out, i = [jpeg[:2]], 2
    for marker, start, end in _segments(jpeg):  # up to and including the scan header
        if marker != DHT:
            out.append(jpeg[start:end])
        i = end
    return b"".join(out) + jpeg[i:]


@cache
def standard_tables() -> bytes:
    """The DHT segments of the K.3 tables, as libjpeg writes them when not asked to optimise."""
    import cv2
    import numpy as np

    ok, jpg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8), [cv2.IMWRITE_JPEG_OPTIMIZE, 0])
    data = jpg.tobytes()
    return b"".join(data[start:end] for marker, start, end in _segments(data) if marker == DHT)


def _scan_start(data) -> int | None:
    """Where the first scan (SOS) starts, if no Huffman table comes before it; None if one
    does, or if the header cannot be walked (the decoder then says what is wrong)."""
    for marker, start, _ in _segments(data):
        if marker == DHT:
            return None
        if marker == SOS:
            return start
    return None


def _segments(data):
    """(marker, start, end) of each header segment from after SOI up to and including SOS."""
    i, n = 2, len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return
    while i + 1 < n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _NO_LENGTH:
            yield marker, i, i + 2
            i += 2
            continue
        if i + 3 >= n:
            return
        end = i + 2 + (data[i + 2] << 8 | data[i + 3])
        if end > n:
            return
        yield marker, i, end
        if marker == SOS:
            return
        i = end


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # not DHT, JPG, DAC


def structure_problem(jpeg, width: int, height: int) -> str | None:
    """What is wrong with a frame's JPEG structure, without decoding it: no bytes, no start
    marker (SOI), no end marker (EOI: the frame was cut short; zero bytes after it, a USB
    driver's padding, are allowed), no frame header before the scan, or a size other than
    width x height. None for a frame that looks whole (its entropy-coded data may still be
    damaged: only decoding finds that)."""
    data = memoryview(jpeg).cast("B")
    if len(data) == 0:
        return "no bytes"
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return "no JPEG start marker"
    end = len(data)
    while end > 2 and data[end - 1] == 0:
        end -= 1
    if data[end - 2] != 0xFF or data[end - 1] != 0xD9:
        return "no JPEG end marker (cut short)"
    for marker, start, stop in _segments(data):
        if marker in _SOF and stop - start >= 9:
            h, w = data[start + 5] << 8 | data[start + 6], data[start + 7] << 8 | data[start + 8]
            return None if (w, h) == (width, height) else f"{w}x{h}, not the {width}x{height} the file says"
        if marker == SOS:
            break
    return "no JPEG frame header"
