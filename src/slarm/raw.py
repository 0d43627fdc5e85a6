"""The raw episode file: one HDF5 file per episode, the contract between capture and convert.

Layout (docs/raw-format.md, format_version 2):

    /timestamp            (T,) float64   seconds since the episode's first tick (monotonic clock)
    /tick_index           (T,) int64     tick number since the first tick; a gap is a missed tick
    /state                (T, D) float32 attrs: names, units, lower_limits, upper_limits
    /cameras/<name>/frames        (T,) vlen uint8 (JPEG bytes as delivered; none for a tick the camera
                                  gave no new frame: it shows the row before's) or (T, H, W, 3) uint8 RGB
    /cameras/<name>/capture_time  (T,) float64 the frame's capture time, same clock as /timestamp
    /cameras/<name>/frame_seq     (T,) int64   the camera's frame number (equal in two ticks: same frame)
    attrs on /cameras/<name>: width, height, fps, encoding, source, device, model, serial, port
    attrs on /: format_version, fps, task, robot_type, robot_id, state_source, episode_uuid,
                start_time (ISO 8601, wall clock), calibration (JSON), software (JSON), missed_ticks

An episode is written under `<name>.h5.partial` by a writer thread and renamed to
`<name>.h5` only once complete and flushed, so a complete-looking file is a complete file.
"""

from __future__ import annotations

import json
import mmap
import os
import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from slarm.common import listed

FORMAT_VERSION = 2
READS = (1, 2)  # format 1: a repeated JPEG frame is stored again at every tick that got it
SUFFIX = ".h5"
PARTIAL_SUFFIX = ".h5.partial"
_GROW = 256  # rows added at a time
_NO_BYTES = np.zeros(0, np.uint8)


@dataclass(frozen=True)
class Identity:
    model: str  # the device's product name, as it reports it
    serial: str  # its serial number; "" for the many devices that have none
    port: str  # where it is plugged in: "USB port 3-2" (bus 3, port 2; "3-1.4": port 4 of a hub on port 1)

    def __str__(self) -> str:
        return f"{self.model or 'a device'} ({self.port}{f', serial {self.serial}' if self.serial else ''})"

    def same_device(self, other: Identity) -> bool:
        """Two devices with serial numbers are the same device wherever they are plugged in;
        without them, only the port tells two devices of one model apart."""
        if self.serial and other.serial:
            return (self.model, self.serial) == (other.model, other.serial)
        return (self.model, self.port) == (other.model, other.port)

    def attrs(self) -> dict[str, str]:
        return {"model": self.model, "serial": self.serial, "port": self.port}


def from_attrs(attrs) -> Identity | None:
    """The identity stored with a device in a raw file (None: not known, or an older file)."""
    found = Identity(*(str(attrs.get(k, "")) for k in ("model", "serial", "port")))
    return found if found.port else None



@dataclass(frozen=True)
class CameraInfo:
    name: str
    width: int
    height: int
    fps: int
    encoding: str  # "jpeg" or "rgb"
    source: str
    device: str
    model: str = ""  # which camera that device was (Identity); "" where not known
    serial: str = ""
    port: str = ""


@dataclass
class Tick:
    index: int  # tick number of the sampling loop
    time: float  # time.monotonic() at the start of the tick
    state: np.ndarray
    frames: dict  # camera name -> capture.cameras.Frame


def episode_name(index: int) -> str:
    return f"episode_{index:06d}"


def episode_index(path: Path) -> int | None:
    """The index in an episode file name, or None for other files."""
    stem = path.name.removesuffix(PARTIAL_SUFFIX).removesuffix(SUFFIX)
    if not stem.startswith("episode_") or not stem[8:].isdigit():
        return None
    return int(stem[8:])


def list_episodes(folder: Path) -> tuple[list[Path], list[Path]]:
    """(complete episode files in index order, unfinished .partial files)."""
    if not folder.is_dir():
        return [], []
    complete = [p for p in folder.glob(f"episode_*{SUFFIX}") if episode_index(p) is not None]
    partial = [p for p in folder.glob(f"episode_*{PARTIAL_SUFFIX}") if episode_index(p) is not None]
    return sorted(complete, key=episode_index), sorted(partial, key=episode_index)


class EpisodeWriter:
    """Writes one episode on its own thread. put() never blocks the caller."""

    def __init__(self, path: Path, attrs: dict, state_names: list[str], state_attrs: dict,
                 cameras: list[CameraInfo], max_ticks: int | None = None):
        self.path = path
        self.max_ticks = max_ticks  # ticks of the clock an episode of a fixed length lasts, missed ones included
        self.partial = path.with_name(path.name.removesuffix(SUFFIX) + PARTIAL_SUFFIX)
        self.attrs = attrs
        self.state_names = state_names
        self.state_attrs = state_attrs
        self.cameras = cameras
        self.frames_written = 0
        self.repeated_frames = {cam.name: 0 for cam in cameras}  # ticks that got the frame of the tick before
        self._last_frame: dict = {}  # camera name -> the Frame of the last tick written
        self.first_tick: Tick | None = None
        self.last_tick: Tick | None = None
        self.ticks_put = 0
        self.most_behind = 0  # the largest backlog the writer thread has met
        self._dropping = False  # discarding: ticks still waiting are not written
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"writer-{path.stem}", daemon=True)
        self._thread.start()

    @property
    def duration(self) -> float:
        return 0.0 if self.first_tick is None else self.last_tick.time - self.first_tick.time

    @property
    def missed_ticks(self) -> int:
        """Ticks between the first and the last put that never came (the sampler ran late)."""
        return 0 if self.first_tick is None else self.last_tick.index - self.first_tick.index + 1 - self.ticks_put

    @property
    def backlog(self) -> int:
        """Ticks handed over but not yet written (the disk is slower than the cameras)."""
        return self.ticks_put - self.frames_written

    @property
    def full(self) -> bool:
        """An episode of a fixed length has lasted it: max_ticks ticks of the clock since its first,
        missed ticks included, so that it lasts the seconds asked for however many were missed."""
        return self.max_ticks is not None and self.first_tick is not None and \
            self.last_tick.index - self.first_tick.index + 1 >= self.max_ticks

    def put(self, tick: Tick) -> None:
        if self.max_ticks is not None and self.first_tick is not None and \
                tick.index - self.first_tick.index >= self.max_ticks:
            return
        self.last_tick = tick  # before first_tick: the main thread reads last_tick once first_tick is set
        self.ticks_put += 1
        if self.first_tick is None:
            self.first_tick = tick
        self._queue.put(tick)

    def save(self) -> Path:
        """Finish writing, flush to disk, give the file its final name. Raises if writing failed."""
        self._queue.put("save")
        self._thread.join()
        if self.error is not None:
            self.partial.unlink(missing_ok=True)
            raise self.error
        os.replace(self.partial, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        self._dropping = True  # what still waits is not written first
        self._queue.put("discard")
        self._thread.join()
        self.partial.unlink(missing_ok=True)

    # --- writer thread -----------------------------------------------------------------
    def _run(self) -> None:
        f = None
        try:
            f = h5py.File(self.partial, "w", locking=False)  # see open_episode; the folder has our own lock
            self._create(f)
            rows = 0
            while True:
                item = self._queue.get()
                if item == "discard":
                    return
                if item == "save":
                    self._finish(f, rows)
                    f.flush()
                    os.fsync(f.id.get_vfd_handle())
                    return
                if not self._dropping:
                    rows = self._append(f, rows, item)
        except BaseException as e:  # reported by save()
            self.error = e
            while True:  # drain so put() callers are never blocked by a dead writer
                item = self._queue.get()
                if item in ("save", "discard"):
                    return
        finally:
            if f is not None:
                try:
                    f.close()
                except Exception as e:  # what could not be flushed (disk full): the file is lost anyway
                    self.error = self.error or e

    def _create(self, f: h5py.File) -> None:
        f.attrs["format_version"] = FORMAT_VERSION
        for k, v in self.attrs.items():
            f.attrs[k] = json.dumps(v) if isinstance(v, dict) else v
        d = len(self.state_names)
        f.create_dataset("timestamp", (0,), maxshape=(None,), dtype="f8", chunks=(_GROW,))
        f.create_dataset("tick_index", (0,), maxshape=(None,), dtype="i8", chunks=(_GROW,))
        st = f.create_dataset("state", (0, d), maxshape=(None, d), dtype="f4", chunks=(_GROW, d))
        st.attrs["names"] = self.state_names
        for k, v in self.state_attrs.items():
            st.attrs[k] = v
        for cam in self.cameras:
            g = f.create_group(f"cameras/{cam.name}")
            for k, v in vars(cam).items():
                if k != "name":
                    g.attrs[k] = v
            if cam.encoding == "jpeg":
                g.create_dataset("frames", (0,), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8), chunks=(16,))
            else:
                shape = (cam.height, cam.width, 3)
                g.create_dataset("frames", (0, *shape), maxshape=(None, *shape), dtype="u1", chunks=(1, *shape))
            g.create_dataset("capture_time", (0,), maxshape=(None,), dtype="f8", chunks=(_GROW,))
            g.create_dataset("frame_seq", (0,), maxshape=(None,), dtype="i8", chunks=(_GROW,))

    def _datasets(self, f: h5py.File):
        yield f["timestamp"]
        yield f["tick_index"]
        yield f["state"]
        for cam in self.cameras:
            g = f["cameras"][cam.name]
            yield from (g["frames"], g["capture_time"], g["frame_seq"])

    def _append(self, f: h5py.File, row: int, tick: Tick) -> int:
        self.most_behind = max(self.most_behind, self.ticks_put - row)
        if row >= f["timestamp"].shape[0]:
            for ds in self._datasets(f):
                ds.resize(row + _GROW, axis=0)
        t0, i0 = self.first_tick.time, self.first_tick.index
        f["timestamp"][row] = tick.time - t0
        f["tick_index"][row] = tick.index - i0
        f["state"][row] = tick.state
        for cam in self.cameras:
            g, frame = f["cameras"][cam.name], tick.frames[cam.name]
            last = self._last_frame.get(cam.name)
            repeated = last is not None and frame.seq == last.seq
            if cam.encoding != "jpeg":
                g["frames"][row] = frame.data
            elif repeated and frame.data is last.data:  # the camera had no new frame: its bytes are in the row before
                g["frames"][row] = _NO_BYTES
            else:
                g["frames"][row] = np.frombuffer(frame.data, np.uint8)
            g["capture_time"][row] = frame.time - t0
            g["frame_seq"][row] = frame.seq
            self.repeated_frames[cam.name] += repeated
            self._last_frame[cam.name] = frame
        self.frames_written = row + 1
        return row + 1

    def _finish(self, f: h5py.File, rows: int) -> None:
        for ds in self._datasets(f):
            ds.resize(rows, axis=0)
        expected = int(f["tick_index"][-1]) + 1 if rows else 0
        f.attrs["missed_ticks"] = expected - rows
        f.attrs["frames"] = rows


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- reading ---------------------------------------------------------------------------

class RawFormatError(ValueError):
    """A file is not a readable raw episode of a supported format version."""


@dataclass
class RawCamera:
    name: str
    width: int
    height: int
    fps: int
    encoding: str
    source: str
    frames: h5py.Dataset
    capture_time: np.ndarray
    frame_seq: np.ndarray
    identity: Identity | None = None  # which camera recorded it, where known


@dataclass
class RawEpisode:
    """An open raw episode file. Frames are read on demand; use as a context manager."""

    path: Path
    attrs: dict
    timestamp: np.ndarray
    tick_index: np.ndarray
    state: np.ndarray
    state_names: list[str]
    state_attrs: dict
    cameras: dict[str, RawCamera] = field(default_factory=dict)
    _file: h5py.File | None = None
    _pages: np.ndarray | None = None  # the file, memory-mapped read-only, once a JPEG is read from it
    _spans: dict[str, np.ndarray | None] = field(default_factory=dict)  # camera -> where its JPEGs are
    _stored: dict[str, np.ndarray | None] = field(default_factory=dict)  # the same, a repeat's row empty

    @property
    def fps(self) -> int:
        return int(self.attrs["fps"])

    @property
    def uuid(self) -> str:
        return str(self.attrs["episode_uuid"])

    @property
    def task(self) -> str:
        return str(self.attrs["task"])

    @property
    def frame_count(self) -> int:
        return len(self.timestamp)

    @property
    def stores_repeats_once(self) -> bool:
        """Format 2 on: a tick the camera gave no new frame stores no JPEG bytes (it shows the row before's)."""
        return self.attrs["format_version"] >= 2

    def frame(self, camera: str, i: int) -> np.ndarray:
        """Frame i of a camera: the JPEG's bytes as a 1-D uint8 array, or an (H, W, 3) RGB array.
        A JPEG is a read-only view of the file's pages where its place in the file is known (no copy)."""
        cam = self.cameras[camera]
        if cam.encoding == "jpeg" and camera not in self._spans:
            self._spans[camera] = self._locate_jpegs(cam)
        spans = self._spans.get(camera)
        if spans is not None:
            start, size = spans[i]
            return self._pages[start : start + size]
        data = cam.frames[i]
        while cam.encoding == "jpeg" and not len(data) and i > 0 and self.stores_repeats_once:
            i -= 1  # a repeated frame: its bytes are in the nearest row before that has them
            data = cam.frames[i]
        return data

    def stored(self, camera: str, i: int) -> np.ndarray:
        """The JPEG bytes stored at row i of a camera, as they are in the file: no bytes at a row
        that repeats the frame before (format 2), where frame() gives that frame's."""
        if camera not in self._spans:
            self._spans[camera] = self._locate_jpegs(self.cameras[camera])
        spans = self._stored.get(camera)
        if spans is None:
            return self.cameras[camera].frames[i]
        start, size = spans[i]
        return self._pages[start : start + size]

    def _locate_jpegs(self, cam: RawCamera) -> np.ndarray | None:
        """Where the camera's JPEGs lie in the file (_jpeg_spans), mapping the file once. None, and
        frames are read through h5py, when they cannot be found for any reason: this is only a
        shortcut around h5py's copies."""
        try:
            if self._pages is None:
                with open(self.path, "rb") as fh:
                    self._pages = np.frombuffer(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
            spans = self._stored[cam.name] = _jpeg_spans(self._file, cam.frames, self._pages)
            return _stored_once(spans) if spans is not None and self.stores_repeats_once else spans
        except Exception:  # no mmap here, an unallocated chunk, ...: h5py reads it, or says what is wrong
            return None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._pages, self._spans, self._stored = None, {}, {}  # unmapped once no frame read from it is left

    def __enter__(self) -> RawEpisode:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_episode(path: Path) -> RawEpisode:
    """Open and check a raw episode file. Raises RawFormatError naming what is wrong, whatever
    is damaged in it (HDF5 structures, attributes, datasets, values)."""
    path = Path(path)
    try:
        # No HDF5 file lock: a complete episode is never written again, and on a network disk
        # without locks (NFS without its lock service) the lock fails and every file would
        # look unreadable.
        f = h5py.File(path, "r", locking=False)
    except Exception as e:  # OSError for most damage; others for damage h5py does not expect
        raise RawFormatError(f"{path.name}: not a readable HDF5 file ({reason(e)})") from None
    try:
        ep = _read(path, f)
        _check_values(ep)
        return ep
    except RawFormatError:
        f.close()
        raise
    except Exception as e:  # a damaged file can fail anywhere in h5py: KeyError, OSError, AttributeError, ...
        f.close()
        raise RawFormatError(f"{path.name}: damaged or incomplete ({reason(e)})") from None


def _read(path: Path, f: h5py.File) -> RawEpisode:
    attrs = {k: _attr(v) for k, v in f.attrs.items()}
    version = attrs.get("format_version")
    if version not in READS:
        newer = "; a newer slarm wrote it: update slarm" if isinstance(version, int) and version > max(READS) else ""
        raise RawFormatError(f"{path.name}: raw format version {version!r}, this slarm reads "
                             f"{' and '.join(map(str, READS))}{newer}")
    for k, kind in (("fps", int), ("episode_uuid", str), ("task", str)):
        if not isinstance(attrs.get(k), kind):
            what = "missing" if k not in attrs else f"not {'a number' if kind is int else 'text'}"
            raise RawFormatError(f"{path.name}: damaged: the file's attribute {k} is {what}")
    for k in ("calibration", "software"):
        if isinstance(attrs.get(k), str):
            attrs[k] = json.loads(attrs[k])
    st = f["state"]
    ep = RawEpisode(
        path=path,
        attrs=attrs,
        timestamp=np.asarray(f["timestamp"][:], np.float64),
        tick_index=np.asarray(f["tick_index"][:], np.int64),
        state=st[:],
        state_names=[str(_attr(n)) for n in st.attrs["names"]],
        state_attrs={k: _attr(v) for k, v in st.attrs.items() if k != "names"},
        _file=f,
    )
    n = len(ep.timestamp)
    for name, g in f["cameras"].items():
        if not isinstance(g, h5py.Group):
            raise RawFormatError(f"{path.name}: damaged: camera {name} cannot be read")
        cam = RawCamera(
            name=name, width=int(g.attrs["width"]), height=int(g.attrs["height"]), fps=int(g.attrs["fps"]),
            encoding=_attr(g.attrs["encoding"]), source=_attr(g.attrs["source"]), frames=g["frames"],
            capture_time=g["capture_time"][:], frame_seq=g["frame_seq"][:],
            identity=from_attrs({k: _attr(v) for k, v in g.attrs.items()}),
        )
        if len(cam.frames) != n or len(cam.capture_time) != n or len(cam.frame_seq) != n:
            raise RawFormatError(f"{path.name}: camera {name} has {len(cam.frames)} frames for {n} ticks")
        expected = (n,) if cam.encoding == "jpeg" else (n, cam.height, cam.width, 3)
        if cam.encoding not in ("jpeg", "rgb") or cam.frames.shape != expected:
            raise RawFormatError(f"{path.name}: damaged: camera {name}'s frames are {cam.frames.shape} "
                                 f"{cam.encoding!r}, not {cam.width}x{cam.height} jpeg or rgb")
        ep.cameras[name] = cam
    if ep.state.ndim != 2 or ep.state.shape != (n, len(ep.state_names)) or len(ep.tick_index) != n:
        raise RawFormatError(f"{path.name}: state, tick_index and timestamp lengths differ")
    return ep


def _check_values(ep: RawEpisode) -> None:
    """Values that no recording can hold: a damaged file. Tick numbers that increase row by row,
    timestamps that do too and agree with them (the sampler stamps tick k within one period of
    k / fps; a disagreement of a second is a damaged file, and placing its rows on the time grid
    could ask for billions of frames), and a finite state (NaN would ruin a training run)."""
    name = ep.path.name
    if ep.fps <= 0:
        raise RawFormatError(f"{name}: damaged: fps is {ep.fps}")
    if not len(ep.tick_index):
        return
    if np.any(np.diff(ep.tick_index) <= 0):
        raise RawFormatError(f"{name}: damaged: tick_index does not increase row by row")
    if bad := _rows(~np.isfinite(ep.timestamp)):
        raise RawFormatError(f"{name}: damaged: a timestamp is not a number (rows {bad})")
    if bad := _rows(np.diff(ep.timestamp) < 0):
        raise RawFormatError(f"{name}: damaged: timestamps go backwards (after row {bad})")
    drift = np.abs(ep.timestamp - ep.timestamp[0] - (ep.tick_index - ep.tick_index[0]) / ep.fps).max()
    if drift > 1.0:
        raise RawFormatError(f"{name}: damaged: timestamps and tick numbers disagree by {drift:.1f} s")
    finite = np.isfinite(ep.state)
    if not finite.all():
        joints = [n for n, ok in zip(ep.state_names, finite.all(axis=0)) if not ok]
        raise RawFormatError(f"{name}: damaged: the state is NaN or infinite at rows {_rows(~finite.all(axis=1))} "
                             f"({', '.join(joints)})")


def longest_gap(ep: RawEpisode) -> tuple[float, int]:
    """(seconds, row) of the longest gap between two recorded ticks, the row after which it is."""
    if len(ep.tick_index) < 2:
        return 0.0, 0
    steps = np.diff(ep.tick_index)
    row = int(np.argmax(steps))
    return float(steps[row]) / ep.fps, row


def _rows(mask: np.ndarray) -> str:
    """The rows where `mask` holds ('3, 4, 9', '3, 4, 9, 10, 11, ... (40 in all)'); '' for none."""
    return listed(np.flatnonzero(mask).tolist())


def reason(e: BaseException) -> str:
    """An exception from reading a damaged file in plain words: HDF5's own ("Can't synchronously
    read data (address of object past end of allocation)"), a missing name, or the kind of error
    when it says nothing."""
    text = e.args[0] if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str) else str(e)
    text = " ".join(text.split())
    if isinstance(e, KeyError) and text and " " not in text:
        return f"{text!r} is missing"
    if cut := re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text):
        size, stored = int(cut[1]), int(cut[2])
        return (f"the file is cut short: {size} of its {stored} bytes (a copy or a disk that filled?)"
                if stored < 2**48 else "its header (superblock) is damaged")
    return text or type(e).__name__


_HEAP_ID = np.dtype([("size", "<u4"), ("collection", "<u8"), ("index", "<u4")])  # a vlen element on disk


def _jpeg_spans(f: h5py.File, frames: h5py.Dataset, pages: np.ndarray) -> np.ndarray | None:
    """(T, 2) offset and size in the file of each JPEG frame, so that it can be decoded straight
    from the file's pages: h5py would copy it twice (kernel to HDF5, HDF5 to numpy). A vlen
    element is stored as its size and a global heap ID (collection address, object index); the
    object is found in its collection as the HDF5 file format spec lays it out ("GCOL", version 1;
    objects: index u16, reference count u16, reserved u32, size u64, data padded to 8 bytes).
    None, and frames are read through h5py, when anything is not exactly as expected: filters,
    other address sizes, a truncated file."""
    if frames.id.get_create_plist().get_nfilters() or f.id.get_create_plist().get_sizes() != (8, 8):
        return None
    n, per_chunk = len(frames), frames.chunks[0]
    ids = np.concatenate([np.frombuffer(frames.id.read_direct_chunk((c,))[1], _HEAP_ID)
                          for c in range(0, n, per_chunk)])[:n]
    spans = np.zeros((n, 2), np.int64)
    for i, (size, collection, index) in enumerate(ids.tolist()):
        if size == 0:  # no bytes (a repeated frame), no heap object
            continue
        start = _heap_object(pages, collection, index, size)
        if start is None:
            return None
        spans[i] = start, size
    return spans


def _stored_once(spans: np.ndarray) -> np.ndarray:
    """Each row without bytes (a repeated frame, format 2) given the span of the nearest row before it with bytes."""
    rows = np.arange(len(spans))
    return spans[np.maximum.accumulate(np.where(spans[:, 1] > 0, rows, 0))]


def _heap_object(pages: np.ndarray, collection: int, index: int, size: int) -> int | None:
    """Where object `index` of `size` bytes starts in the global heap collection at `collection`."""
    header = pages[collection : collection + 16].tobytes()
    if len(header) < 16 or header[:5] != b"GCOL\x01":
        return None
    end = min(collection + int.from_bytes(header[8:16], "little"), len(pages))
    at = collection + 16
    while at + 16 <= end:
        obj = pages[at : at + 16].tobytes()
        obj_index, obj_size = int.from_bytes(obj[:2], "little"), int.from_bytes(obj[8:16], "little")
        if obj_index == index:
            return at + 16 if obj_size == size and at + 16 + size <= end else None
        if obj_index == 0:  # the collection's free space: the rest is unused
            return None
        at += 16 + (obj_size + 7) // 8 * 8
    return None


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return [_attr(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        return v.item()
    return v
