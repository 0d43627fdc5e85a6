"""Frames as many USB webcams send MJPEG: without Huffman tables (slarm/mjpeg.py)."""

from __future__ import annotations

import numpy as np

from slarm.capture.sim.camera_server import encoded_frames
from slarm.mjpeg import with_huffman_tables, without_huffman_tables


def tables_before_scan(jpeg: bytes) -> bool:
    return b"\xff\xc4" in jpeg[: jpeg.index(b"\xff\xda")]


def test_the_standard_tables_restore_a_webcam_frame_byte_for_byte():
    """libjpeg encodes with the standard tables; a frame sent without them, once completed, is
    exactly the encoder's output again, whether given as bytes or as read from a raw file."""
    for jpeg in encoded_frames(1920, 1080)[:8]:
        sent = without_huffman_tables(jpeg)
        assert tables_before_scan(jpeg) and not tables_before_scan(sent)
        assert len(sent) < len(jpeg)
        assert with_huffman_tables(sent) == jpeg
        assert with_huffman_tables(np.frombuffer(sent, np.uint8)) == jpeg


def test_frames_with_tables_and_unreadable_bytes_pass_through_unchanged():
    jpeg = encoded_frames(1920, 1080)[0]
    assert with_huffman_tables(jpeg) is jpeg, "not copied"
    header_only = without_huffman_tables(jpeg)[:100]
    for bad in (b"", b"\xff\xd8", b"not a jpeg at all", header_only, b"\xff\xd8\xff\xdb\xff\xff"):
        assert with_huffman_tables(bad) is bad, bad[:20]
