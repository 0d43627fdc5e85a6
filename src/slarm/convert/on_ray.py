"""Episodes prepared as Ray tasks anywhere on a cluster (slarm-convert --ray ADDRESS).

The same contract as workers.in_workers: job(source, folder/episode-N, settings, ...) for every
new episode, results in episode order, a progress bar. Each task runs the job in a temporary
folder on its node and sends back the result with that folder's files (an episode's encoded
videos, or its small v2.1 dataset: kilobytes to a few megabytes), which land in
folder/episode-N here, so the writer on this machine sees what a local worker leaves. The raw
files are read where they are, at the same absolute path on every node (a shared file system):
`check_nodes` makes sure before any work. Ray retries a task whose worker or node died; a task
that fails skips its episode as a local worker would. Ray is imported only here.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections import Counter, deque
from contextlib import contextmanager
from pathlib import Path

from slarm.common import first_line, listed, raise_if_stopped
from slarm.errors import Refused

from .prepare import Prepared
from .settings import Settings
from .sources import Source
from .workers import as_a_worker, progress_bar, run_episode

INSTALL = "pip install 'slarm[ray]'"
RETRIES = 3  # of a task whose worker process or node died
AHEAD = 4


def connect(address: str):
    """Join the Ray cluster at `address` (as ray.init takes it: auto, HOST:PORT, ray://HOST:10001)
    as a driver; the number of CPUs it has. Refused when Ray is missing or no cluster answers."""
    try:
        import ray
    except ImportError:
        raise Refused(f"--ray needs Ray, which is not installed here: {INSTALL}") from None
    import logging

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # its C++ core's notes on the terminal
    if ray.is_initialized():  # an earlier run in this process (a notebook)
        ray.shutdown()
    try:
        _reachable(address)
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False,
                 configure_logging=True)
    except Exception as e:  # ConnectionError, ValueError (a malformed address), ...
        raise Refused(f"--ray {address}: no Ray cluster could be joined there ({first_line(e)}); start one with "
                      "'ray start --head' and give its address (HOST:6379), or 'auto' on one of its nodes") from None
    return int(ray.cluster_resources().get("CPU", 0))


def join(address: str, sources: list[Source]) -> tuple[int, int]:
    """Join the Ray cluster at `address` and check that its nodes can read `sources` (before the
    dataset is touched): its CPUs and nodes."""
    cpus = connect(address)
    try:
        return cpus, check_nodes(sources)
    except BaseException:
        disconnect()
        raise


def _reachable(address: str, timeout: float = 10) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address answers: ray.init would wait minutes for one
    that does not. 'auto' is found by Ray itself, at once or not at all."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if sep and port.isdigit():
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass


def disconnect() -> None:
    import ray

    ray.shutdown()  # this driver's connection; the cluster goes on


def check_nodes(sources: list[Source]) -> int:
    """Every node that runs tasks reads every raw file at its path here (the same size), and has
    the same slarm: else Refused, naming the node and what it lacks. The number of such nodes."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    files = {str(s.path.resolve()): s.path.stat().st_size for s in sources}
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    if not nodes:
        raise Refused("--ray: the cluster has no node with CPUs to run tasks on")
    check = ray.remote(num_cpus=0, max_retries=RETRIES)(_check_node)
    refs = {n["NodeManagerAddress"] + f" ({n['NodeID'][:8]})": check.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(files) for n in nodes}
    for node, ref in refs.items():
        try:
            version, unreadable = ray.get(ref, timeout=120)
        except Exception as e:
            raise Refused(f"--ray: node {node} could not run slarm's check ({first_line(e)}): every node needs "
                          f"slarm {_version()} installed ({INSTALL}) in the Python its Ray runs") from None
        if version != _version():
            raise Refused(f"--ray: node {node} has slarm {version}, this machine {_version()}: install the "
                          "same version on every node")
        if unreadable:
            raise Refused(f"--ray: node {node} cannot read {listed(unreadable, 3)}: the raw folders must be on a "
                          "file system every node mounts at the same path as this machine (NFS, a cluster file "
                          "system), or copied to the same path on each node")
    return len(nodes)


def _check_node(files: dict[str, int]) -> tuple[str, list[str]]:
    """On one node: slarm's version, and the raw files it cannot read (with why)."""
    unreadable = []
    for path, size in files.items():
        try:
            with open(path, "rb") as f:
                f.read(8)
            if os.path.getsize(path) != size:
                unreadable.append(f"{path} (another file: {os.path.getsize(path)} bytes, not {size})")
        except OSError as e:
            unreadable.append(f"{path} ({e.strerror or e})")
    return _version(), unreadable


@contextmanager
def on_ray(job, new: list[Source], folder: Path, settings: Settings, workers: int, nodes: Counter):
    """Run job(source, folder/episode-N, settings, 1) as a Ray task for every episode in `new`,
    at most `workers` at a time (spread over the nodes); gives an iterator over the results (or
    Skipped) in episode order, with a progress bar, and counts in `nodes` the episodes each node
    prepared. A failure or a Ctrl-C here cancels the rest."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=RETRIES, scheduling_strategy="SPREAD")(_run_on_node)
    sources = [dataclasses.replace(s, path=s.path.resolve()) for s in new]
    bar = progress_bar(new)
    pending: deque = deque()

    def submit(i: int):
        ref = task.remote(job, sources[i], settings)
        ref.future().add_done_callback(lambda _, frames=new[i].frames: bar.update(frames))
        pending.append(ref)
        return ref

    def results():
        # `workers` tasks run at a time; one that ends starts the next even while an earlier episode
        # is still awaited (no core idles behind a long episode), up to AHEAD x workers episodes
        # ahead of the writer (what waits in the object store stays bounded)
        running: list = []
        submitted = 0
        for i in range(len(new)):
            while True:
                while submitted < len(new) and len(running) < workers and submitted - i < AHEAD * workers:
                    running.append(submit(submitted))
                    submitted += 1
                if pending[0] not in running:  # episode i is ready
                    break
                _, running = ray.wait(running, num_returns=1)
            try:
                result, node, files = ray.get(pending.popleft())
            except ray.exceptions.RayError as e:  # the task failed as a whole, Ray's retries spent
                cause = getattr(e, "cause", None) or e
                raise RuntimeError(f"{new[i].path}: its Ray task failed: {first_line(cause)}") from None
            raise_if_stopped()
            nodes[node] += 1
            yield _landed(result, files, folder / f"episode-{i}")

    try:
        yield results()
    except BaseException:
        for ref in pending:
            ray.cancel(ref)  # a running task stops (KeyboardInterrupt in it) and removes its folder
        raise
    finally:
        bar.close()
        disconnect()


def _run_on_node(job, source: Source, settings: Settings):
    """In a Ray worker: the episode's job in a temporary folder of this node; the result, the
    node's id, and the folder's files ({relative path: bytes})."""
    import ray

    _start_worker()
    scratch = Path(tempfile.mkdtemp(prefix="slarm-episode-"))
    try:
        result = run_episode(job, source, scratch / "episode", settings, 1, stopped=lambda: False)
        root = scratch / "episode"
        files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        if isinstance(result, Prepared):
            result.videos = {cam: str(Path(p).relative_to(root)) for cam, p in result.videos.items()}
        return result, ray.get_runtime_context().get_node_id(), files
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _landed(result, files: dict[str, bytes], folder: Path):
    """A task's result with its files written to `folder`, its paths pointing there."""
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if isinstance(result, Prepared):
        result.videos = {cam: folder / p for cam, p in result.videos.items()}
    return result


def _version() -> str:
    from importlib.metadata import version

    return version("slarm")


_started = False


def _start_worker() -> None:
    """Once per Ray worker process: the priority and thread count of a local worker."""
    global _started
    if not _started:
        as_a_worker(1)
        _started = True
