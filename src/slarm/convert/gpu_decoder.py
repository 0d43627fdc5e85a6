"""--device cuda: JPEG decoding and resizing on the GPU, in one process per GPU that the CPU
workers send their frames to.

A CUDA context per worker (torch imported, memory taken, the GPU time-sliced between contexts)
made more workers slower; here only the decoder processes import torch and hold a context,
and the workers stay forked CPU processes that read the raw files, encode and count stats.
A worker sends a batch of one camera's JPEG frames and gets their training images back
(frames.decode_resize on the decoder's device) over a Unix socket in the abstract namespace
(Linux; no file, gone with the process, and only a holder of the run's key is answered). Each
connection has a thread of its own in the decoder; torch gives up the GIL while the GPU works.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import secrets
import signal
import sys
import threading
import time
from contextlib import contextmanager
from multiprocessing.connection import Client, Listener

from slarm.common import STOPS, first_line


class DecoderFailed(RuntimeError):
    """The decoder process could not be reached or failed: the run's failure, not the episode's."""


def gpus() -> list[str]:
    """The devices of this machine's NVIDIA GPUs, as torch names them."""
    import torch

    return [f"cuda:{k}" for k in range(torch.cuda.device_count())]


@contextmanager
def decoders(devices: list[str]):
    """A decoder process on each of `devices` (spawned: CUDA cannot be used in a forked
    process); gives what their clients need (address, key, pid), one per device. They end with the
    block, and with slarm-convert even when it is killed."""
    context = multiprocessing.get_context("spawn")
    key = secrets.token_bytes(32)
    addresses = [f"\0slarm-decoder-{os.getpid()}-{secrets.token_hex(8)}" for _ in devices]
    processes = [context.Process(target=_serve, args=(a, key, d, os.getpid()), daemon=True, name=f"slarm-decoder {d}")
                 for a, d in zip(addresses, devices)]
    for p in processes:
        p.start()
    try:
        yield [(a, key, p.pid) for a, p in zip(addresses, processes)]
    finally:
        for p in processes:
            p.kill()
            p.join()


class Remote:
    """A worker's end of a decoder process: decode_resize(frames, settings) there."""

    def __init__(self, address: str, key: bytes, pid: int, wait_s: float = 120):
        self.address, self.key, self.pid, self.wait_s, self.conn = address, key, pid, wait_s, None

    def decode_resize(self, frames: list, settings) -> list:
        if self.conn is None:
            self.conn = self._connect()
        try:
            self.conn.send((frames, settings))
            ok, answer = self.conn.recv()
        except (OSError, EOFError) as e:
            raise DecoderFailed(f"the GPU decoder process is gone ({e or type(e).__name__})") from None
        if not ok:
            raise DecoderFailed(f"the GPU decoder failed: {answer}")
        return answer

    def _connect(self):
        """The decoder imports torch and opens its CUDA context while the first frames are read:
        wait for it to listen."""
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                return Client(self.address, family="AF_UNIX", authkey=self.key)
            except (FileNotFoundError, ConnectionRefusedError):
                if not _alive(self.pid):
                    raise DecoderFailed("the GPU decoder process could not start (its message is above)") from None
                if time.monotonic() > deadline:
                    raise DecoderFailed(f"the GPU decoder did not start in {self.wait_s:.0f} s") from None
                time.sleep(0.05)


def _serve(address: str, key: bytes, device: str, parent: int) -> None:
    """The decoder process: end with slarm-convert, load torch on `device`, answer each worker's
    connection in a thread of its own."""
    for sig in STOPS:  # slarm-convert decides what a Ctrl-C means, and ends this process
        signal.signal(sig, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)
    try:
        import torch

        from .frames import decode_resize

        torch.empty(1, device=device)  # the CUDA context, before the first frames arrive
    except Exception as e:
        print(f"error: the GPU decoder on {device} could not start: {first_line(e)}", file=sys.stderr, flush=True)
        os._exit(1)
    with Listener(address, family="AF_UNIX", authkey=key) as listener:
        while True:
            try:
                conn = listener.accept()
            except Exception:  # a client without the key: not ours
                continue
            threading.Thread(target=_answer, args=(conn, device, decode_resize), daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:  # a child that has ended but is not yet reaped is a zombie: gone all the same
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def _answer(conn, device: str, decode_resize) -> None:
    with conn:
        while True:
            try:
                frames, settings = conn.recv()
            except (EOFError, OSError):  # the worker is done
                return
            try:
                conn.send((True, decode_resize(frames, settings, device)))
            except Exception as e:
                conn.send((False, f"{type(e).__name__}: {e}"))
