"""The --device cuda path: GPU JPEG decoding and resizing (torchvision / torch) and NVENC.

The torch code path itself is checked everywhere (on the CPU, against the OpenCV path);
the end-to-end GPU conversion runs only where PyTorch sees an NVIDIA GPU."""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from conftest import ROOT
from slarm.convert.encoding import check_codec
from slarm.convert.frames import Undecodable, training_images, training_images_torch
from slarm.convert.settings import Settings
from slarm.convert.timeline import grid_rows
from slarm.raw import open_episode
from test_convert import column, convert, damage_frames, load

GPU = torch.cuda.is_available()


@pytest.mark.parametrize("mode", ["stretch", "crop", "pad"])
def test_torch_decode_and_resize_match_opencv(raw, mode):
    """The same images, with two frames the camera broke (the first, and one inside a batch)
    replaced by the same neighbours."""
    path = sorted(glob.glob(str(raw / "*.h5")))[0]
    damage_frames(path, [0, 7])
    s = Settings(224, 160, mode)
    with open_episode(path) as ep:
        rows, _ = grid_rows(ep.tick_index)
        rows = rows[:12]
        cams = tuple((n, c.width, c.height) for n, c in ep.cameras.items())
        noted = {"cpu": Undecodable(ep.frame_count), "torch": Undecodable(ep.frame_count)}
        cpu = [d["wrist"] for d in training_images(ep, cams, rows, s, noted["cpu"])]
        torch_path = [d["wrist"] for d in training_images_torch(ep, cams, rows, s, device="cpu", batch=5,
                                                                undecodable=noted["torch"])]
    assert noted["cpu"].rows == noted["torch"].rows == {"wrist": [0, 7]}
    assert len(torch_path) == len(cpu)
    assert torch_path[0].shape == (160, 224, 3) and torch_path[0].dtype == np.uint8
    diff = np.abs(np.stack(cpu).astype(int) - np.stack(torch_path).astype(int))
    assert diff.mean() < 1.5, "same picture, up to decoder and rounding differences"


@pytest.mark.skipif(GPU, reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_one_clear_message(raw, tmp_path):
    r = convert(raw, tmp_path / "ds", "--device", "cuda")
    assert r.returncode == 2
    assert "--device cuda: PyTorch sees no NVIDIA GPU" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ds").exists()


def _nvenc() -> bool:
    try:
        check_codec("h264_nvenc")
        return True
    except ValueError:
        return False


def _video_codec(ds) -> str:
    return ds.meta.features["observation.images.wrist"]["info"]["video.codec"]


@pytest.mark.skipif(not GPU, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("codec", ["libsvtav1", "h264_nvenc"])
def test_convert_on_the_gpu_matches_the_cpu(raw, tmp_path, codec):
    if codec == "h264_nvenc" and not _nvenc():
        pytest.skip("this GPU has no NVENC video encoder (A100, H100, H200 have none)")
    codec_args = [] if codec == "libsvtav1" else ["--codec", codec]  # libsvtav1: what --device cuda uses by default
    r = convert(raw, tmp_path / "gpu", "--device", "cuda", *codec_args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert convert(raw, tmp_path / "cpu", "--codec", codec).returncode == 0
    gpu, cpu = load(tmp_path / "gpu"), load(tmp_path / "cpu")
    assert (gpu.num_episodes, len(gpu)) == (cpu.num_episodes, len(cpu))
    assert _video_codec(gpu) == _video_codec(cpu)
    np.testing.assert_array_equal(column(gpu, "observation.state"), column(cpu, "observation.state"))
    for i in (0, len(gpu) - 1):
        diff = (gpu[i]["observation.images.wrist"] - cpu[i]["observation.images.wrist"]).abs().mean()
        assert diff < 0.02


def test_a_decoder_process_gives_what_the_opencv_path_gives(raw):
    """--device cuda's decoder process (here on the CPU): a worker's batches of frames sent to it
    come back as the images the OpenCV path makes, broken frames replaced the same way."""
    from slarm.convert import frames, gpu_decoder

    path = sorted(glob.glob(str(raw / "*.h5")))[0]
    damage_frames(path, [0, 7])
    s = Settings(224, 160, "crop")
    with open_episode(path) as ep, gpu_decoder.decoders(["cpu"]) as remotes:
        rows = grid_rows(ep.tick_index)[0][:40]
        cams = tuple((n, c.width, c.height) for n, c in ep.cameras.items())
        noted = {"cpu": Undecodable(ep.frame_count), "remote": Undecodable(ep.frame_count)}
        cpu = [d["wrist"] for d in training_images(ep, cams, rows, s, noted["cpu"])]
        frames._decoder = gpu_decoder.Remote(*remotes[0])
        try:
            remote = [d["wrist"] for d in training_images(ep, cams, rows, Settings(224, 160, "crop", device="cuda"),
                                                          noted["remote"])]
        finally:
            frames._decoder = None
    assert noted["cpu"].rows == noted["remote"].rows == {"wrist": [0, 7]}
    assert len(remote) == len(cpu) and remote[0].shape == (160, 224, 3)
    diff = np.abs(np.stack(cpu).astype(int) - np.stack(remote).astype(int))
    assert diff.mean() < 1.5, "same picture, up to decoder and rounding differences"


def in_a_fresh_process(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `code` in a new Python. Workers forked from this test process could hang: OpenCV's
    thread pool, which earlier tests used here, does not survive a fork; slarm-convert forks its
    workers before it decodes anything, as a fresh process does."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


PREPARE = """
    import sys
    from pathlib import Path
    from slarm.convert import frames, gpu_decoder
    from slarm.convert.prepare import prepare_episode
    from slarm.convert.settings import Settings
    from slarm.convert.sources import find
    from slarm.convert.workers import in_workers

    raw, out, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    sources, _, _ = find([raw])
    s = Settings(device="cuda")
"""


def test_workers_send_their_frames_to_one_decoder_process(raw, tmp_path):
    """Forked CPU workers with a decoder process (on the CPU here, on the GPU with --device
    cuda): each episode what it is when one process prepares it with that decoder."""
    r = in_a_fresh_process(PREPARE + """
    import json, numpy as np
    with in_workers(prepare_episode, sources, out / "remote", s, 2, decoder_devices=[device]) as results:
        remote = list(results)
    with gpu_decoder.decoders([device]) as remotes:
        frames._decoder = gpu_decoder.Remote(*remotes[0])
        local = [prepare_episode(src, out / "local" / src.path.stem, s) for src in sources]
    print(json.dumps([{"frames": [src.frames, there.frames, here.frames],
                       "same_counts": bool(np.array_equal(there.histograms["wrist"].counts,
                                                          here.histograms["wrist"].counts)),
                       "same_video": there.videos["wrist"].read_bytes() == here.videos["wrist"].read_bytes()}
                      for src, there, here in zip(sources, remote, local)]))
    """, str(raw), str(tmp_path), "cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    episodes = json.loads(r.stdout.splitlines()[-1])
    assert len(episodes) == 2
    for e in episodes:
        assert e["frames"][0] == e["frames"][1] == e["frames"][2] > 0
        assert e["same_counts"] and e["same_video"], e


def test_a_decoder_that_cannot_start_fails_the_run_not_the_episodes(raw, tmp_path):
    """A decoder process that cannot open its device: the workers stop waiting for it at once and
    the run fails with one line (each episode is not skipped as damaged)."""
    started = time.monotonic()
    r = in_a_fresh_process(PREPARE + """
    from slarm.convert.gpu_decoder import DecoderFailed
    try:
        with in_workers(prepare_episode, sources, out, s, 2, decoder_devices=[device]) as results:
            print(list(results))
    except DecoderFailed as e:
        print(f"DecoderFailed: {e}")
    """, str(raw), str(tmp_path), "cuda:7")
    assert time.monotonic() - started < 60
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "DecoderFailed: the GPU decoder process could not start (its message is above)"
    assert "error: the GPU decoder on cuda:7 could not start:" in r.stderr and "Traceback" not in r.stderr, r.stderr
