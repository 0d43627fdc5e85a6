"""From camera JPEG to the encoder: the training images in the encoder's layout, a frame given to
several ticks decoded once, LeRobot's encoder settings, the encoder's threads and messages."""

from __future__ import annotations

import os
import subprocess
import sys

import av
import h5py
import numpy as np
import pytest

from conftest import ROOT
from slarm.capture.sim.camera_server import barcode_value, encoded_frames
from slarm.convert.encoding import CODECS, VideoWriter, codec_options
from slarm.convert.frames import to_image, to_yuv420, training_images, training_images_torch, yuv420_to_rgb
from slarm.convert.settings import Settings
from slarm.convert.stats import sample_indices
from slarm.convert.timeline import grid_rows
from slarm.raw import open_episode


@pytest.mark.parametrize("decoder,raw_format", [("opencv", 2), ("opencv", 1), ("torch", 2)])
def test_a_frame_the_camera_gave_to_several_ticks_is_decoded_once(raw, monkeypatch, decoder, raw_format):
    """A camera slower than the ticks (auto exposure in dim light, a 15 fps camera in a 30 fps
    recording) gives consecutive ticks the same frame: it is decoded once for all of them, and
    every tick still shows its own frame. A frame number repeated with other bytes is no repeat.
    Both decoding paths: OpenCV's, and torch's (the --device cuda code, run here on the CPU); files
    of raw format 2 (the frame's bytes at its first tick only) and 1 (at every tick)."""
    file = sorted(raw.glob("*.h5"))[0]
    with open_episode(file) as ep:
        jpegs = [ep.frame("wrist", i).copy() for i in range(ep.frame_count)]
    with h5py.File(file, "r+") as f:
        frames, seq = f["cameras/wrist/frames"], f["cameras/wrist/frame_seq"]
        f.attrs["format_version"] = raw_format
        sent = seq[:]  # the frame number each row's bytes show (as a barcode, modulo 128)
        for i in range(len(jpegs)):
            frames[i] = jpegs[i]
        for i in range(1, 40, 2):  # rows 1, 3, ..., 39: the camera had no new frame
            frames[i], seq[i], sent[i] = jpegs[i - 1] if raw_format == 1 else np.zeros(0, np.uint8), seq[i - 1], sent[i - 1]
        frames[41], seq[41], sent[41] = jpegs[44], seq[40], sent[44]  # the number of frame 40, other bytes
    decodes = []
    name = "_decode_bgr" if decoder == "opencv" else "_torch_images"
    decode = getattr(sys.modules["slarm.convert.frames"], name)

    def counted(*args):
        decodes.append(len(args[2]) if decoder == "torch" else 1)
        return decode(*args)

    monkeypatch.setattr(f"slarm.convert.frames.{name}", counted)
    with open_episode(file) as ep:
        rows, _ = grid_rows(ep.tick_index)
        cams = tuple((n, c.width, c.height) for n, c in ep.cameras.items())
        if decoder == "opencv":
            images = [d["wrist"] for d in training_images(ep, cams, rows, Settings())]
        else:
            images = [d["wrist"] for d in training_images_torch(ep, cams, rows, Settings(), device="cpu", batch=8)]
    expected = sent[rows]
    assert [barcode_value(image) for image in images] == list(expected % 128), "each tick shows its frame"
    assert sum(decodes) == 1 + np.count_nonzero(np.diff(expected)) < len(rows) - 15, "each frame decoded once"


@pytest.mark.parametrize("codec", CODECS)
def test_workers_encode_with_lerobots_settings(codec):
    """Workers encode without importing LeRobot: their FFmpeg options must be the ones LeRobot's
    encoder config gives (and records in info.json), and their stats sample LeRobot's frames."""
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.compute_stats import sample_indices as lerobot_sample_indices

    for threads in (None, 1, 3):
        assert codec_options(codec, threads) == RGBEncoderConfig(vcodec=codec).get_codec_options(threads, as_strings=True)
    assert all(sample_indices(n) == lerobot_sample_indices(n) for n in range(1, 3000))


@pytest.mark.parametrize("mode", ["stretch", "crop", "pad"])
@pytest.mark.parametrize("source", ["jpeg", "rgb", "odd-sized rgb"])
def test_images_in_the_encoders_layout_are_the_rgb_images(mode, source):
    """Workers hand the encoder yuv420p images, made by converting before resizing: the same
    picture as the RGB training image (no plane swapped or shifted, colours kept), as FFmpeg's
    conversion of that RGB image would give it to the encoder."""
    jpeg = np.frombuffer(encoded_frames(1920, 1080)[3], np.uint8)
    frame, scale = {"jpeg": (jpeg, 4), "rgb": (to_image(jpeg, 640, 360, "stretch", 2), 1),
                    "odd-sized rgb": (to_image(jpeg, 641, 361, "stretch", 2), 1)}[source]
    for width, height in [(256, 256), (224, 160)]:
        rgb = to_image(frame, width, height, mode, scale)
        yuv = to_yuv420(frame, width, height, mode, scale)
        assert yuv.shape == (height * 3 // 2, width)
        ffmpegs = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
        assert np.abs(yuv.astype(int) - ffmpegs).mean() < 1.5, "the encoder gets what FFmpeg would give it"
        back = yuv420_to_rgb(yuv).astype(float)
        assert np.abs(back - rgb).mean() < 2.5
        np.testing.assert_allclose(back.mean(axis=(0, 1)), rgb.mean(axis=(0, 1)), atol=1.5, err_msg="colours")


def test_hevc_encodes_without_flooding_the_terminal(tmp_path, capfd):
    """x265 prints its banner and a summary per file on stderr unless told not to: with 20
    episodes that pushed the progress bar and the summary off the screen."""
    w = VideoWriter(tmp_path / "v.mp4", 30, "hevc", 1)
    for i in range(5):
        w.add(np.full((64, 64, 3), i * 10, np.uint8))
    w.close()
    assert "x265" not in capfd.readouterr().err
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "hevc" and len(list(c.decode(video=0))) == 5


def test_encoding_leaves_no_real_time_threads(tmp_path):
    """SVT-AV1 run as root (as in most containers) puts its threads and the caller at real-time
    priority, starving the rest of the machine; the encoder must hand them back."""
    code = f"""
import os, numpy as np
from pathlib import Path
from slarm.convert.encoding import VideoWriter
w = VideoWriter(Path({str(tmp_path / "v.mp4")!r}), 30, "libsvtav1", 1)
for i in range(20):
    w.add(np.full((64, 64, 3), i * 10, np.uint8))
    policies = {{int(t): os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")}}
    assert all(p == os.SCHED_OTHER for p in policies.values()), (i, policies)
w.close()
print("ok", len(policies), "threads")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "SVT_LOG": "1"})
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
