"""The session's config file: load it, check every field, say exactly what is wrong.

The layout is the one of the recording spec (dataset_name, task_description,
output_dir, robot, camera, recording, hub) plus what capture needs: raw_dir,
a `cameras` list as an alternative to `camera`, and how frames are stored.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

CAMERA_BACKENDS = ("mjpeg", "opencv")
FRAME_STORAGE = ("jpeg", "rgb")
ROBOT_TYPES = ("so101", "gamepad")
# gamepad buttons that can be recorded, in SDL_GameControllerButton order
GAMEPAD_BUTTONS = ("a", "b", "x", "y", "back", "guide", "start", "l3", "r3", "l1", "r1",
                   "dpad_up", "dpad_down", "dpad_left", "dpad_right")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
TOP_LEVEL = ("dataset_name", "task_description", "output_dir", "raw_dir", "robot", "camera", "cameras",
             "recording", "hub")


class ConfigError(ValueError):
    """A config value is wrong. The message names the field and what is expected."""


@dataclass(frozen=True)
class CameraConfig:
    name: str = "wrist"
    device: int | str = 0
    capture_width: int = 1920
    capture_height: int = 1080
    fps: int | None = None  # None: the recording fps
    target_width: int = 256
    target_height: int = 256
    backend: str = "mjpeg"  # mjpeg: the camera's own JPEG bytes; opencv: LeRobot's OpenCVCamera, decoded frames
    storage: str = "jpeg"  # for decoded frames: jpeg (encoded once) or rgb (pixel arrays)
    jpeg_quality: int = 90


@dataclass(frozen=True)
class RobotConfig:
    type: str = "so101"  # so101: joint radians of an SO-101 moved by hand; gamepad: a teleoperation pad's axes
    id: str = "my_so101_follower"
    port: str = "/dev/ttyACM0"
    calibration_dir: str | None = None  # None: LeRobot's default calibration folder
    index: int = 0  # gamepad: which game controller, in SDL's order
    buttons: tuple[str, ...] = ()  # gamepad: buttons recorded after the six axes, e.g. ("l1", "r1")


@dataclass(frozen=True)
class HubConfig:
    push_to_hub: bool = False
    repo_id: str | None = None
    private: bool = False


@dataclass(frozen=True)
class Config:
    dataset_name: str
    task_description: str
    robot: RobotConfig
    cameras: tuple[CameraConfig, ...]
    fps: int
    output_dir: Path = Path("./datasets")
    raw_dir: Path = Path("./raw")
    hub: HubConfig = field(default_factory=HubConfig)

    @property
    def episodes_dir(self) -> Path:
        """Where this dataset's raw episode files go: {raw_dir}/{dataset_name}/."""
        return self.raw_dir / self.dataset_name

    def camera_fps(self, camera: CameraConfig) -> int:
        return camera.fps or self.fps


def load(path: str | Path) -> Config:
    """Read and check a config file. Raises ConfigError with one clear message."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (copy config.json from the slarm repository)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    try:
        return parse(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def parse(raw: object) -> Config:
    """Build a Config from parsed JSON; relative folders are relative to the working directory."""
    obj = _Obj(raw, "")
    nested = {f.name: part for part, cls in (("camera", CameraConfig), ("robot", RobotConfig), ("hub", HubConfig))
              for f in fields(cls)} | {"fps": "recording"}
    obj.only(TOP_LEVEL, nested)
    dataset_name = obj.string("dataset_name")
    if not NAME_RE.match(dataset_name):
        raise ConfigError(f"dataset_name: {dataset_name!r} must be a folder name (letters, digits, _ . -)")
    task = obj.string("task_description")
    if not task.strip():
        raise ConfigError("task_description: must describe the task in words, e.g. \"pick up the red cube\"")

    rec = obj.child("recording")
    rec.only(("fps",))
    fps = rec.integer("fps", lo=1, hi=240)

    robot = _robot(obj.child("robot"))

    if "camera" in obj.raw and "cameras" in obj.raw:
        raise ConfigError("camera, cameras: give one of them (`cameras` is a list of `camera` objects)")
    if "cameras" in obj.raw:
        items = obj.raw["cameras"]
        if not isinstance(items, list) or not items:
            raise ConfigError("cameras: expected a non-empty list of camera objects")
        cameras = tuple(_camera(_Obj(c, f"cameras[{i}].")) for i, c in enumerate(items))
    else:
        cameras = (_camera(obj.child("camera")),)
    names = [c.name for c in cameras]
    if len(set(names)) != len(names):
        raise ConfigError(f"cameras: camera names must differ, got {names}")

    hub = obj.child("hub", optional=True)
    hub.only(HubConfig)
    hub_cfg = HubConfig(
        push_to_hub=hub.boolean("push_to_hub", False),
        repo_id=hub.string("repo_id", None, nullable=True),
        private=hub.boolean("private", False),
    )
    if hub_cfg.push_to_hub and not hub_cfg.repo_id:
        raise ConfigError("hub.repo_id: required when hub.push_to_hub is true, e.g. \"your_hf_user/so101_pickplace\"")

    return Config(
        dataset_name=dataset_name,
        task_description=task,
        robot=robot,
        cameras=cameras,
        fps=fps,
        output_dir=Path(obj.string("output_dir", "./datasets")),
        raw_dir=Path(obj.string("raw_dir", "./raw")),
        hub=hub_cfg,
    )


def _robot(obj: _Obj) -> RobotConfig:
    obj.only(RobotConfig)
    rtype = obj.choice("type", ROBOT_TYPES, "so101")
    if rtype == "gamepad":
        buttons = obj.raw.get("buttons", [])
        if not isinstance(buttons, list) or any(b not in GAMEPAD_BUTTONS for b in buttons) \
                or len(set(buttons)) != len(buttons):
            raise ConfigError(f"{obj.prefix}buttons: expected a list of distinct button names from "
                              f"{', '.join(GAMEPAD_BUTTONS)}, e.g. [\"l1\", \"r1\"]; got {json.dumps(buttons)}")
        return RobotConfig(type=rtype, id=_file_name(obj, "id", "gamepad"), port="",
                           index=obj.integer("index", 0, lo=0, hi=15), buttons=tuple(buttons))
    return RobotConfig(
        type=rtype,
        id=_file_name(obj, "id"),
        port=obj.string("port"),
        calibration_dir=obj.string("calibration_dir", None, nullable=True),
    )


def _file_name(obj: _Obj, key: str, default: str | None = None) -> str:
    """A value that becomes a file name (robot.id: LeRobot's calibration file {id}.json): one
    name, no folder, so that it cannot point anywhere else on the disk."""
    value = obj.string(key) if default is None else obj.string(key, default)
    if not value.strip() or "/" in value or "\\" in value or value in (".", "..") or "\0" in value:
        raise ConfigError(f"{obj.prefix}{key}: {value!r} becomes a file name (the calibration file {value}.json): "
                          "give a plain name without / or .., e.g. \"my_so101_follower\"")
    return value


def _camera(obj: _Obj) -> CameraConfig:
    obj.only(CameraConfig)
    name = obj.string("name", "wrist")
    if not re.match(r"^[A-Za-z0-9_]+$", name):
        raise ConfigError(f"{obj.prefix}name: {name!r} must be a short word such as wrist, top or side")
    device = obj.raw.get("device", 0) if isinstance(obj.raw, dict) else 0
    if isinstance(device, bool) or not isinstance(device, (int, str)):
        raise ConfigError(f"{obj.prefix}device: expected a camera index (0) or a path (/dev/video0)")
    if isinstance(device, str) and device.strip().isdigit():  # "0" means camera 0, not a file named 0
        device = int(device)
    fps = obj.raw.get("fps") if isinstance(obj.raw, dict) else None
    return CameraConfig(
        name=name,
        device=device,
        capture_width=obj.integer("capture_width", 1920, lo=16, hi=8192),
        capture_height=obj.integer("capture_height", 1080, lo=16, hi=8192),
        fps=None if fps is None else obj.integer("fps", lo=1, hi=240),
        target_width=obj.integer("target_width", 256, lo=8, hi=4096),
        target_height=obj.integer("target_height", 256, lo=8, hi=4096),
        backend=obj.choice("backend", CAMERA_BACKENDS, "mjpeg"),
        storage=obj.choice("storage", FRAME_STORAGE, "jpeg"),
        jpeg_quality=obj.integer("jpeg_quality", 90, lo=1, hi=100),
    )


_MISSING = object()


class _Obj:
    """A JSON object with typed getters that name the field in their errors."""

    def __init__(self, raw: object, prefix: str):
        if not isinstance(raw, dict):
            where = prefix.rstrip(".") or "the config"
            raise ConfigError(f"{where}: expected a JSON object {{...}}, got {type(raw).__name__}")
        self.raw = raw
        self.prefix = prefix

    def child(self, key: str, optional: bool = False) -> _Obj:
        if key not in self.raw:
            if optional:
                return _Obj({}, f"{self.prefix}{key}.")
            raise ConfigError(f"{self.prefix}{key}: missing (see config.json in the slarm repository)")
        return _Obj(self.raw[key], f"{self.prefix}{key}.")

    def only(self, known, nested: dict[str, str] | None = None) -> None:
        """Refuse keys that are not settings here (a typo would otherwise be silently ignored);
        keys starting with "_" are notes. `known`: the key names, or a dataclass with them as
        fields; `nested`: settings of an object inside this one, and that object's key."""
        names = [f.name for f in fields(known)] if isinstance(known, type) else list(known)
        for key in self.raw:
            if key not in names and not key.startswith("_"):
                close = difflib.get_close_matches(key, names, n=1)
                if nested and key in nested:
                    hint = f"it goes inside \"{nested[key]}\": {{...}}"
                elif close:
                    hint = f"did you mean {close[0]}?"
                else:
                    hint = f"known here: {', '.join(names)}"
                raise ConfigError(f"{self.prefix}{key}: not a setting ({hint})")

    def _get(self, key: str, default):
        if key in self.raw:
            return self.raw[key]
        if default is _MISSING:
            raise ConfigError(f"{self.prefix}{key}: missing")
        return default

    def string(self, key: str, default=_MISSING, nullable: bool = False):
        v = self._get(key, default)
        if v is None and nullable:
            return None
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{self.prefix}{key}: expected a non-empty string, got {json.dumps(v)}")
        return v

    def integer(self, key: str, default=_MISSING, lo: int | None = None, hi: int | None = None) -> int:
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{self.prefix}{key}: expected a whole number, got {json.dumps(v)}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ConfigError(f"{self.prefix}{key}: {v} is out of range, expected {lo}..{hi}")
        return v

    def boolean(self, key: str, default=_MISSING) -> bool:
        v = self._get(key, default)
        if not isinstance(v, bool):
            raise ConfigError(f"{self.prefix}{key}: expected true or false, got {json.dumps(v)}")
        return v

    def choice(self, key: str, choices: tuple[str, ...], default=_MISSING) -> str:
        v = self._get(key, default)
        if v not in choices:
            raise ConfigError(f"{self.prefix}{key}: expected one of {', '.join(choices)}, got {json.dumps(v)}")
        return v
