"""Ways a raw episode file gets damaged: a full disk or a kill mid-copy, bit rot on an old disk,
a hand edit with h5py, a USB camera on a busy bus. Each function damages the file in place;
DAMAGE lists them by name for the tests (test_damaged.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import h5py
import numpy as np

HEAP_ID_SIZE = 16  # a vlen element on disk: size u32, heap collection address u64, object index u32


def flip(path: Path, offsets) -> None:
    """Invert the bytes at `offsets` of the file."""
    data = bytearray(path.read_bytes())
    for at in offsets:
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(share: float):
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * share)])
    return damage


def superblock(path: Path) -> None:
    """The superblock's end-of-file and root-group addresses (HDF5 superblock version 0)."""
    flip(path, range(40, 48))


def object_header(name: str):
    def damage(path: Path) -> None:
        with h5py.File(path, "r") as f:
            addr = h5py.h5o.get_info(f[name].id).addr
        flip(path, range(addr + 16, addr + 24))  # the first message's type, size and flags
    return damage


def heap_ids(rows) -> callable:
    """The global heap collection addresses of some camera frames: HDF5 cannot find their bytes."""
    def damage(path: Path) -> None:
        with h5py.File(path, "r") as f:
            chunk = f["cameras/wrist/frames"].id.get_chunk_info(0).byte_offset
        flip(path, [chunk + r * HEAP_ID_SIZE + 4 + k for r in rows for k in range(4, 8)])
    return damage


def delete(name: str, attribute: str | None = None):
    def damage(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            if attribute is None:
                del f[name]
            else:
                del f[name].attrs[attribute]
    return damage


def edit(column: str, change) -> callable:
    def damage(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            values = f[column][:]
            change(values)
            f[column][:] = values
    return damage


def nan_state(values):
    values[10, 1] = np.nan
    values[11, 5] = np.inf


def backwards(values):
    values[20:] -= 0.1


def gap(seconds: float):
    """A pause between two ticks (the machine slept, the loop stalled), consistent in both columns."""
    def damage(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            fps = int(f.attrs["fps"])
            f["tick_index"][20:] = f["tick_index"][20:] + round(seconds * fps)
            f["timestamp"][20:] = f["timestamp"][20:] + seconds
    return damage


def frames(change, share: float = 0.25):
    """Change a share of the camera's stored JPEG frames (those with bytes)."""
    def damage(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            stored = f["cameras/wrist/frames"]
            rows = [i for i in range(len(stored)) if len(stored[i])]
            for i in rows[1 : 1 + max(1, int(len(rows) * share))]:
                stored[i] = np.frombuffer(change(stored[i].tobytes(), i), np.uint8)
    return damage


def garbage(jpeg: bytes, i: int) -> bytes:
    return np.random.default_rng(i).integers(0, 256, len(jpeg) // 4, np.uint8).tobytes()


def bit_rot(jpeg: bytes, i: int) -> bytes:
    """The frame's entropy-coded data cut short and closed with an end marker, as a camera that
    lost part of a frame on the bus sends it: it still decodes (grey below the break), and the
    decoder says "Corrupt JPEG data: premature end of data segment"."""
    return jpeg[: len(jpeg) * 2 // 3] + b"\xff\xd9"


def not_hdf5(path: Path) -> None:
    path.write_text("this is not an HDF5 file\n")


def no_frames(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        for name in ("timestamp", "tick_index", "state", "cameras/wrist/frames", "cameras/wrist/capture_time",
                     "cameras/wrist/frame_seq"):
            f[name].resize(0, axis=0)
        f.attrs["frames"] = 0


DAMAGE = {
    "truncated at 10%": truncate(0.1),
    "truncated at 50%": truncate(0.5),
    "truncated at 99%": truncate(0.99),
    "superblock": superblock,
    "object header of the camera": object_header("cameras/wrist"),
    "object header of the state": object_header("state"),
    "heap ids": heap_ids(range(3, 20)),
    "state deleted": delete("state"),
    "frame_seq deleted": delete("cameras/wrist/frame_seq"),
    "episode_uuid deleted": delete("/", "episode_uuid"),
    "fps deleted": delete("/", "fps"),
    "camera width deleted": delete("cameras/wrist", "width"),
    "NaN and inf in the state": edit("state", nan_state),
    "timestamps going backwards": edit("timestamp", backwards),
    "a ten-minute gap": gap(600),
    "garbage JPEGs": frames(garbage),
    "bit-rotted JPEGs": frames(bit_rot),
    "not an HDF5 file": not_hdf5,
    "no frames": no_frames,
}


def damaged_copy(good: Path, to: Path, how: str) -> Path:
    """A copy of the episode `good` at `to` with its own uuid (else it is the same episode), damaged `how`."""
    to.write_bytes(good.read_bytes())
    with h5py.File(to, "r+") as f:
        f.attrs["episode_uuid"] = str(uuid.uuid4())
    DAMAGE[how](to)
    return to
