"""Worker processes, one raw episode each: started at once, results taken in episode order.

Workers are forked on Linux (fast start, and what the main process has imported is shared).
With --device cuda they send their frames to a decoder process per GPU (gpu_decoder.py), the
only processes that use CUDA (elsewhere, without those, each worker is spawned and decodes on
the GPU itself: CUDA cannot be used in a forked process). They end with
slarm-convert even when it is killed, stop at their next frame when it gives up, and skip (not
fail on) an episode with too many frames that cannot be decoded (frames.Undecodable). They run
at a lower priority than slarm-convert's own process (WORKER_NICENESS), which every episode
waits for: it imports LeRobot while the first episodes are prepared, then writes each one.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from slarm.common import STOPS, count, disk_full, raise_if_stopped
from slarm.raw import reason

from . import frames, gpu_decoder
from .frames import UnreadableFrame
from .prepare import Stopped
from .settings import Settings
from .sources import Source


@dataclass
class Skipped:
    """The result of an episode that could not be prepared (a damaged file): the file and why."""

    reason: str


@contextmanager
def in_workers(job, new: list[Source], folder: Path, settings: Settings, workers: int,
               decoder_devices: list[str] | None = None):
    """Start job(source, folder/episode-N, settings, encoder threads) for every episode in `new`,
    `workers` at a time; gives an iterator over the results (or Skipped) in episode order, with a
    progress bar. decoder_devices: where the decoder processes of settings.device "cuda" run
    (default: one per GPU)."""
    with ExitStack() as stack:
        remotes = []
        if settings.device != "cpu" and sys.platform == "linux":
            remotes = stack.enter_context(gpu_decoder.decoders(decoder_devices or gpu_decoder.gpus()))
        fork = sys.platform == "linux" and (settings.device == "cpu" or bool(remotes))
        context = multiprocessing.get_context("fork" if fork else "spawn")
        stopping = context.Event()
        yield stack.enter_context(_pool(job, new, folder, settings, workers, context, stopping, remotes))


@contextmanager
def _pool(job, new, folder, settings, workers, context, stopping, remotes):
    threads = max(1, usable_cores() // workers)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                               initargs=(os.getpid(), stopping, threads, remotes, context.Value("i", 0)))
    futures = [pool.submit(_run, job, s, folder / f"episode-{i}", settings, threads) for i, s in enumerate(new)]
    bar = progress_bar(new)
    for source, future in zip(new, futures):
        future.add_done_callback(lambda _, frames=source.frames: bar.update(frames))

    try:
        yield _in_order(futures)
    except BaseException:
        stopping.set()  # running episodes stop at their next frame
        raise
    finally:
        pool.shutdown(cancel_futures=True)
        bar.close()


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use, not all the machine's: those of its CPU affinity
    (taskset, a Slurm job, a container's cpuset), and no more than the CPU quota of its
    container (docker --cpus, a Kubernetes CPU limit). A worker per machine core would
    crowd into them, each with its encoder's memory."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this system (macOS, Windows)
        cores = os.cpu_count() or 1
    quota = _cpu_quota(cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def _cpu_quota(cgroup: Path) -> float | None:
    """The container's CPU quota in cores, as a container sees its cgroup (v2: cpu.max "quota
    period"; v1: cpu/cpu.cfs_quota_us, -1 for none); None without one."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
    except (OSError, ValueError):
        try:
            quota, period = ((cgroup / "cpu" / f"cpu.cfs_{n}_us").read_text().strip() for n in ("quota", "period"))
        except OSError:
            return None
    if not (quota.isdigit() and period.isdigit() and int(period)):  # "max", -1: no quota
        return None
    return int(quota) / int(period)


def _in_order(futures):
    for future in futures:
        result = future.result()
        raise_if_stopped()  # a Ctrl-C that a library swallowed (e.g. while LeRobot was imported)
        yield result


_stopping = None  # in a worker: the event slarm-convert sets when it gives up on the run
# Added to a worker's nice value (the threads it starts inherit it, the encoder's included): a
# core that the main process wants is its, not a worker's (docs/benchmarks.md)
WORKER_NICENESS = 10


def _start_worker(parent: int, stopping, threads: int, remotes: list, started) -> None:
    """In a new worker: end with slarm-convert, even when it is killed (Linux; an orphaned worker
    would wait for work forever), and know when to stop early. A Ctrl-C (or a SIGTERM to the
    process group) reaches every worker too: slarm-convert, not each worker, decides what it
    means. With decoder processes (`remotes`), the workers take
    them in turn (`started` counts the workers started)."""
    global _stopping
    as_a_worker(threads)
    _stopping = stopping
    for sig in STOPS:
        signal.signal(sig, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)
    if remotes:
        with started.get_lock():
            k, started.value = started.value, started.value + 1
        frames._decoder = gpu_decoder.Remote(*remotes[k % len(remotes)])


def as_a_worker(threads: int) -> None:
    """A worker's priority (below slarm-convert's own process) and its share of the cores for
    OpenCV (whose own pool of one thread per core would compete with the other workers)."""
    if hasattr(os, "nice"):  # not on Windows. First: the threads started from now on inherit it
        os.nice(WORKER_NICENESS)
    import cv2

    cv2.setNumThreads(threads)


def progress_bar(new: list[Source]):
    """The bar of a run converting the episodes `new`, in frames."""
    from tqdm import tqdm

    return tqdm(total=sum(s.frames for s in new), unit="frame", desc=f"converting {count(len(new), 'episode')}",
                disable=None)


def _run(job, source: Source, *args):
    """In a worker: one episode's job, which checks between frames whether to stop."""
    return run_episode(job, source, *args, stopped=_stopping.is_set)


def run_episode(job, source: Source, *args, stopped):
    """One episode's job. Whatever goes wrong in reading or preparing one episode (too many
    frames that cannot be decoded, HDF5 data that cannot be read, a value no recording holds)
    skips that episode, not the run; a full disk is the run's failure, and a stop is the run's."""
    try:
        return job(source, *args, stopped=stopped)
    except UnreadableFrame as e:
        return Skipped(f"{source.path}: {e}")
    except (Stopped, gpu_decoder.DecoderFailed):
        raise
    except Exception as e:
        if disk_full(e):
            raise
        return Skipped(f"{source.path}: damaged: {reason(e)}")
