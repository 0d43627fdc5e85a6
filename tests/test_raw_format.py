"""The raw episode file, written and read back in this process: JPEG bytes exactly as sent, a
frame given to several ticks stored once."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from recording import assert_frames_read_from_the_file
from slarm.capture.cameras import Frame
from slarm.raw import CameraInfo, EpisodeWriter, RawFormatError, Tick, open_episode


def small_and_large_camera_writer(path: Path) -> EpisodeWriter:
    """An episode of a 64x48 camera ("wrist") and a 1920x1080 one ("top"), for ticks put by hand."""
    return EpisodeWriter(path, attrs={"fps": 30, "task": "t", "robot_type": "so101", "episode_uuid": "u"},
                         state_names=["a"], state_attrs={"units": "rad"},
                         cameras=[CameraInfo("wrist", 64, 48, 30, "jpeg", "test", "0"),
                                  CameraInfo("top", 1920, 1080, 30, "jpeg", "test", "1")])


def test_small_and_large_jpegs_read_back_exactly(tmp_path):
    """Small frames share one of HDF5's heap collections, large ones get their own: both read back."""
    path = tmp_path / "episode_000000.h5"
    w = small_and_large_camera_writer(path)
    rng = np.random.default_rng(0)
    for k in range(40):
        small = cv2.imencode(".jpg", rng.integers(0, 255, (48, 64, 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 5 + 2 * k])[1]
        large = cv2.imencode(".jpg", rng.integers(0, 255, (1080, 1920, 3), np.uint8))[1]
        w.put(Tick(k, k / 30, np.zeros(1, np.float32), {"wrist": Frame(small.tobytes(), k, k / 30),
                                                        "top": Frame(large.tobytes(), k, k / 30)}))
    w.save()
    with open_episode(path) as ep:
        assert ep.frame_count == 40
        assert_frames_read_from_the_file(ep)


def test_a_frame_given_to_several_ticks_is_stored_once(tmp_path):
    """A camera slower than the ticks gives several ticks one frame: the file holds its bytes once,
    and every tick reads back its frame, through the file's pages and through h5py. A frame number
    repeated with other bytes is stored as sent. Files of format 1, which stored a repeated frame
    again at every tick, read the same; a newer format is refused with what to do."""
    path = tmp_path / "episode_000000.h5"
    w = small_and_large_camera_writer(path)
    rng = np.random.default_rng(0)
    jpeg = lambda h, w: cv2.imencode(".jpg", rng.integers(0, 255, (h, w, 3), np.uint8))[1].tobytes()  # noqa: E731
    sent: dict[str, list[bytes]] = {"wrist": [], "top": []}
    frames: dict[str, Frame] = {}
    for k in range(40):
        for name, seq, size in (("wrist", k // 3, (48, 64)), ("top", k // 2, (1080, 1920))):
            if name not in frames or frames[name].seq != seq or (name, k) == ("top", 21):  # 21: same number, new bytes
                frames[name] = Frame(jpeg(*size), seq, k / 30)
            sent[name].append(frames[name].data)
        w.put(Tick(k, k / 30, np.zeros(1, np.float32), dict(frames)))
    w.save()

    def reads_back(ep) -> None:
        assert ep.frame_count == 40
        assert_frames_read_from_the_file(ep)
        for name in sent:
            assert [ep.frame(name, i).tobytes() for i in range(40)] == sent[name]
            ep._spans[name] = None  # through h5py
            assert [ep.frame(name, i).tobytes() for i in range(40)] == sent[name]

    with open_episode(path) as ep:
        reads_back(ep)
        for name, distinct in (("wrist", 14), ("top", 21)):
            stored = sum(len(ep.cameras[name].frames[i]) for i in range(40))
            assert stored == sum(map(len, dict.fromkeys(sent[name]))) and len(dict.fromkeys(sent[name])) == distinct
    with h5py.File(path, "r+") as f:  # as format 1 stored it
        f.attrs["format_version"] = 1
        for name in sent:
            for i, data in enumerate(sent[name]):
                f[f"cameras/{name}/frames"][i] = np.frombuffer(data, np.uint8)
    with open_episode(path) as ep:
        reads_back(ep)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 3
    with pytest.raises(RawFormatError, match="raw format version 3, this slarm reads 1 and 2; a newer slarm wrote it: "
                                             "update slarm"):
        open_episode(path)
