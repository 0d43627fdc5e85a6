"""LeRobot's private internals that slarm uses (src/slarm/lerobot_private.py): each hook is
there in the installed LeRobot and does what slarm relies on; and when LeRobot changes one,
the hook says so, naming itself, rather than going on silently."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import capture, episodes_dir, tree_digest, write_config
from slarm import lerobot_private as private
from slarm.capture.sim.camera_server import encoded_frames
from slarm.convert.frames import to_image
from slarm.convert.settings import Settings
from slarm.convert.stats import ImageHistogram, image_stats, sample_indices


def load(root: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("local/test", root=root, video_backend="pyav")


FEATURES = {"observation.state": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]},
            "observation.images.cam": {"dtype": "video", "shape": (64, 64, 3), "names": ["height", "width", "channels"]}}


def use_hook(hook: str, tmp_path: Path):
    """Call the hook `hook` as slarm does."""
    from lerobot.motors.feetech import FeetechMotorsBus

    if hook == "dataset_taking_encoded_videos":
        return private.dataset_taking_encoded_videos(tmp_path / "ds", "local/test", 30, FEATURES, None, "libsvtav1")
    if hook == "VideoAppends":
        return private.VideoAppends(tmp_path / "appends", lambda: 100.0)
    if hook == "skip_embedding_without_images":
        return private.skip_embedding_without_images()
    if hook == "quantile_stats":
        return private.quantile_stats(np.ones((3, 256), np.int64))
    if hook in ("linked_aggregation", "in_memory_reads"):
        with getattr(private, hook)():
            return None
    if hook == "release_port":
        bus = FeetechMotorsBus(port="/dev/null", motors={})
        if hasattr(bus.port_handler, "is_using"):
            bus.port_handler.is_using = True  # marked busy, as a read cut off by a fault leaves it
        private.release_port(bus)
        return bus.port_handler.is_using
    raise KeyError(hook)


@pytest.mark.parametrize("hook", private.HOOKS)
def test_every_hook_works_with_the_installed_lerobot(hook, tmp_path):
    result = use_hook(hook, tmp_path)
    if hook == "release_port":
        assert result is False
    if hook == "quantile_stats":
        assert {"min", "max", "mean", "std", "q01", "q99"} <= set(result)


# one internal of each hook taken away, as a LeRobot release that renamed it would
REMOVED = {
    "dataset_taking_encoded_videos": ("lerobot.datasets.lerobot_dataset.LeRobotDataset", "_build_streaming_encoder"),
    "VideoAppends": ("lerobot.datasets.dataset_writer", "get_file_size_in_mb"),
    "skip_embedding_without_images": ("lerobot.datasets.dataset_writer", "embed_images"),
    "quantile_stats": ("lerobot.datasets.compute_stats.RunningQuantileStats", "_num_quantile_bins"),
    "release_port": ("scservo_sdk.port_handler.PortHandler", "is_using"),
    "linked_aggregation": ("lerobot.datasets.aggregate", "update_chunk_file_indices"),
    "in_memory_reads": ("lerobot.datasets.dataset_reader", "load_nested_dataset"),
}


@pytest.mark.parametrize("hook", private.HOOKS)
def test_a_hook_whose_internal_changed_says_so_by_name(hook, tmp_path, monkeypatch):
    import importlib

    where, name = REMOVED[hook]
    module, _, cls = where.rpartition(".")
    owner = getattr(importlib.import_module(module), cls) if cls[0].isupper() else importlib.import_module(where)
    if hook == "release_port":  # an instance attribute: the class's __init__ sets it
        real_init = owner.__init__
        monkeypatch.setattr(owner, "__init__", lambda self, *a, **k: (real_init(self, *a, **k),
                                                                       delattr(self, "is_using"))[0])
    elif hook == "quantile_stats":
        real_init = owner.__init__
        monkeypatch.setattr(owner, "__init__", lambda self, *a, **k: (real_init(self, *a, **k),
                                                                       delattr(self, name))[0])
    else:
        monkeypatch.delattr(owner, name)
    with pytest.raises(private.LeRobotChanged, match=f"hook '{hook}'.*{name}"):
        use_hook(hook, tmp_path)


def test_a_changed_signature_is_named_too(monkeypatch, tmp_path):
    from lerobot.datasets import dataset_writer

    monkeypatch.setattr(dataset_writer, "concatenate_video_files", lambda videos, out, fps: None)
    with pytest.raises(private.LeRobotChanged, match="'VideoAppends'.*concatenate_video_files takes"):
        use_hook("VideoAppends", tmp_path)


@pytest.mark.parametrize("size", [(256, 256), (640, 360)])  # 640x360: LeRobot downsamples before its stats
def test_image_stats_are_lerobots(size):
    """Image stats from pixel counts (workers count, the writer computes): min, max, quantiles and
    count as LeRobot's get_feature_stats gives them on the frames it samples; mean and std exact."""
    from lerobot.datasets.compute_stats import auto_downsample_height_width, get_feature_stats

    jpegs = encoded_frames(1920, 1080)
    frames = [to_image(np.frombuffer(jpegs[i % len(jpegs)], np.uint8), *size, "stretch", scale=2) for i in range(150)]
    histogram = ImageHistogram(len(frames))
    for frame in frames:
        histogram.add(frame)
    ours = image_stats(histogram)

    sampled = np.stack([auto_downsample_height_width(frames[i].transpose(2, 0, 1)) for i in sample_indices(150)])
    lerobots = get_feature_stats(sampled, axis=(0, 2, 3), keepdims=True)
    assert set(ours) == set(lerobots)
    for key in ("min", "max", "q01", "q10", "q50", "q90", "q99", "count"):
        np.testing.assert_array_equal(ours[key], lerobots[key], err_msg=key)
        assert ours[key].shape == lerobots[key].shape
    exact = sampled.astype(np.float64)
    np.testing.assert_allclose(ours["mean"].ravel(), exact.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(ours["std"].ravel(), exact.std(axis=(0, 2, 3)), rtol=1e-5)


def test_episode_tables_skip_only_a_no_op_embedding(tmp_path):
    """The writer skips LeRobot's embed_images for tables without image columns (ours: the videos
    are files of their own), where it changes nothing; a table with images is still embedded."""
    import datasets
    from lerobot.datasets import dataset_writer
    from lerobot.datasets.io_utils import embed_images
    from PIL import Image

    from slarm.lerobot_private import skip_embedding_without_images

    skip_embedding_without_images()
    embed = dataset_writer.embed_images
    assert embed is not embed_images
    numbers = datasets.Dataset.from_dict({"observation.state": [[0.5, 1.0]] * 3, "index": [0, 1, 2]})
    assert embed(numbers).with_format("arrow")[:].equals(embed_images(numbers).with_format("arrow")[:])

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "frame.png")
    images = datasets.Dataset.from_dict({"image": [str(tmp_path / "frame.png")]},
                                        features=datasets.Features({"image": datasets.Image()}))
    embedded = embed(images).with_format("arrow")[:]
    assert embedded.column("image")[0]["bytes"].as_py() == (tmp_path / "frame.png").read_bytes()



@pytest.mark.e2e
def test_writer_joins_each_video_file_once_into_what_lerobots_writer_writes(tmp_path, monkeypatch):
    """LeRobot's writer remuxes the whole video file for every episode appended to it; ours
    joins each file once, into the same files, byte for byte, for each of two cameras. The file
    size limit is set so that the wrist camera's first file takes an 11th episode by 100 bytes:
    the sizes of the parts waiting to be joined (each with its own MP4 header) add up to more
    than that, and the real size must decide."""
    from dataclasses import replace

    from lerobot.datasets import dataset_writer
    from lerobot.datasets.video_utils import concatenate_video_files

    from slarm.convert import v30
    from slarm.convert.prepare import prepare_episode
    from slarm.convert.sources import find

    cfg = write_config(tmp_path, cameras=[{"name": "wrist", "capture_width": 640, "capture_height": 480},
                                          {"name": "scene", "capture_width": 320, "capture_height": 240}])
    r = capture("--config", str(cfg), "--sim", "--episodes", "2", "--episode-time", "1.5", "--preview", "off")
    assert r.returncode == 0, r.stdout + r.stderr
    sources, _, _ = find([episodes_dir(cfg)])
    assert sorted(name for name, _, _ in sources[0].cameras) == ["scene", "wrist"]
    prepared = [prepare_episode(s, tmp_path / "encoded" / str(i), Settings(), 1) for i, s in enumerate(sources)]
    videos = [prepared[k % len(prepared)].videos["wrist"] for k in range(30)]
    ten = tmp_path / "ten.mp4"
    shutil.copy(videos[0], ten)
    concatenate_video_files([ten, *videos[1:10]], ten)
    limit_mb = (ten.stat().st_size + videos[10].stat().st_size + 100) / 1024**2

    def write(root: Path, joined_once: bool) -> int:
        remuxes = []
        @functools.wraps(concatenate_video_files)  # LeRobot's signature, which the hook checks
        def counted(*a, **k):
            remuxes.append(a)
            return concatenate_video_files(*a, **k)

        monkeypatch.setattr(dataset_writer, "concatenate_video_files", counted)
        writer = v30.Writer(root, sources[0], Settings(), join_videos_once=joined_once)  # False: LeRobot's as it is
        writer.dataset.meta.update_chunk_settings(video_files_size_in_mb=limit_mb)
        for k in range(len(videos)):
            ep = prepared[k % len(prepared)]
            copies = {cam: tmp_path / "copies" / f"{root.name}-{k}" / cam / "video.mp4" for cam in ep.videos}
            for cam, copy in copies.items():  # the writer moves or deletes them
                copy.parent.mkdir(parents=True)
                shutil.copy(ep.videos[cam], copy)
            writer.add(replace(ep, videos=copies))
        writer.finish()
        return len(remuxes)

    size_in_mb = dataset_writer.get_file_size_in_mb
    ours, lerobots = write(tmp_path / "ours", True), write(tmp_path / "lerobot", False)
    assert dataset_writer.get_file_size_in_mb is size_in_mb  # LeRobot's own again once a writer is done
    assert [p.relative_to(tmp_path / "ours") for p in sorted((tmp_path / "ours").rglob("*")) if p.is_file()] == \
        [p.relative_to(tmp_path / "lerobot") for p in sorted((tmp_path / "lerobot").rglob("*")) if p.is_file()]
    assert tree_digest(tmp_path / "ours") == tree_digest(tmp_path / "lerobot")
    ds = load(tmp_path / "ours")
    file_of_episode = list(ds.meta.episodes["videos/observation.images.wrist/file_index"])
    assert file_of_episode.count(0) == 11 and len(set(file_of_episode)) >= 3
    files = len(list((tmp_path / "ours" / "videos").rglob("*.mp4")))
    assert lerobots == 2 * len(videos) - files  # every episode but each file's first
    assert ours <= 4 * files  # twice per file, and again to learn its size at the limit
