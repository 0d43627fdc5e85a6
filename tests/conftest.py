"""Shared helpers: a config for the simulated rig, and ways to run slarm-capture as a user does."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The simulated hardware's folder stays after a session, for tests that read the arm's writes
# from it (arm_writes); removed when the tests end. tests/test_damaged.py checks the default.
os.environ["SLARM_KEEP_SIM"] = "1"


# Tests are in two layers: the fast one runs in this process (config, arguments, raw format,
# timeline, frames, stats, the dataset folder's rules), `scripts/test -m "not e2e"`, in under a
# minute; the end-to-end one (marked e2e) runs the commands as a user does, on the simulated rig.
# A test that records or converts through these fixtures is end-to-end by that alone.
E2E_FIXTURES = {"recorded", "raw", "lerobot_v21_python"}


def pytest_collection_modifyitems(items):
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def _remove_kept_sim_folders():
    yield
    import tempfile

    for folder in Path(tempfile.gettempdir()).glob("slarm-sim-*"):
        if (folder / "keep").exists():
            shutil.rmtree(folder, ignore_errors=True)


def tree_digest(root: Path) -> str:
    """One digest of every file below `root`, names and bytes: equal digests, the same tree."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@dataclass
class Ran:
    exit_code: int
    output: str  # stdout and stderr, in the order written


def invoke(command, args: list[str]) -> Ran:
    """Run a slarm click command in this process as its console script does (errors.exit_status:
    the one place that turns errors into messages and exit statuses), catching what it prints."""
    import contextlib
    import io

    from slarm.errors import exit_status

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = exit_status(command, [str(a) for a in args])
    return Ran(code, out.getvalue())


def write_config(folder: Path, **overrides) -> Path:
    cfg = json.loads((ROOT / "config.json").read_text())
    cfg["raw_dir"] = str(folder / "raw")
    cfg["output_dir"] = str(folder / "datasets")
    if "cameras" in overrides:
        del cfg["camera"]  # a config gives `camera` or `cameras`
    for key, value in overrides.items():
        cfg[key] = value
    path = folder / "config.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


@pytest.fixture
def config(tmp_path) -> Path:
    return write_config(tmp_path)


def episodes_dir(config_path: Path) -> Path:
    cfg = json.loads(config_path.read_text())
    return Path(cfg["raw_dir"]) / cfg["dataset_name"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path]:
    """(config, raw folder) with two 1.5 s episodes recorded on the simulated rig."""
    folder = tmp_path_factory.mktemp("recorded")
    cfg = write_config(folder)
    r = capture("--config", str(cfg), "--sim", "--episodes", "2", "--episode-time", "1.5", "--preview", "off")
    assert r.returncode == 0, r.stdout + r.stderr
    return cfg, episodes_dir(cfg)


@pytest.fixture
def raw(recorded, tmp_path) -> Path:
    """A private copy of the recorded raw folder."""
    dst = tmp_path / "raw" / "so101_pickplace_v1"
    shutil.copytree(recorded[1], dst)
    return dst


RECALIBRATED = "shoulder_pan's zero moved 3.5°, elbow_flex turns the other way, wrist_roll's zero moved 0.9°"


def recalibrate(episode: Path) -> None:
    """Make a recorded episode's stored calibration that of the same arm calibrated again: each
    joint taken to a slightly other middle pose and range (RECALIBRATED says by how much, where
    it matters: the gripper's 0.2° does not), the elbow motor's direction flipped."""
    import h5py

    with h5py.File(episode, "r+") as f:
        cal = json.loads(f.attrs["calibration"])
        cal["shoulder_pan"]["homing_offset"] += 40  # 40 ticks of 4095 a turn: 3.5°
        cal["elbow_flex"]["drive_mode"] = 1
        cal["wrist_roll"]["range_min"] += 10  # the middle moves 10 ticks: 0.9°
        cal["wrist_roll"]["range_max"] += 10
        cal["gripper"]["range_min"] += 4  # the middle moves 2 ticks: 0.2°
        f.attrs["calibration"] = json.dumps(cal)


def capture(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run slarm-capture to the end, without a terminal (as CI or a script would)."""
    return subprocess.run(
        [sys.executable, "-m", "slarm.capture.cli", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=ROOT,
    )


def start_capture(*args: str) -> subprocess.Popen:
    """Start slarm-capture without a terminal, to read what it prints (stdout and stderr) line by line."""
    return subprocess.Popen([sys.executable, "-m", "slarm.capture.cli", *args], cwd=ROOT, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def spawn_capture(*args: str, timeout: float = 60) -> pexpect.spawn:
    """Start slarm-capture in a pseudo-terminal, to drive it with real key presses."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return pexpect.spawn(sys.executable, ["-m", "slarm.capture.cli", *args], cwd=str(ROOT), env=env,
                         timeout=timeout, encoding="utf-8", dimensions=(40, 200))


def device_pids(text: str) -> dict[str, int]:
    """Process ids of the simulated devices, from the line slarm-capture prints about them."""
    return {name: int(pid) for name, pid in re.findall(r"([\w-]+) pid (\d+)", text)}


def on_small_disk(disk: Path, size: str, script: str) -> subprocess.CompletedProcess:
    """Run the shell `script` with a tmpfs of `size` (e.g. "25m") mounted on the folder `disk`, in a
    mount namespace of its own: the small disk is gone when the script ends, so the script copies
    out what is to be checked. Skips the test where the machine allows no such namespace."""
    disk.mkdir(parents=True, exist_ok=True)
    mount = f"mount -t tmpfs -o size={size} tmpfs {disk} || exit 99\n"
    try:
        r = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", mount + script], cwd=ROOT,
                           text=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    except FileNotFoundError:
        pytest.skip("needs unshare (util-linux) for a small disk of its own")
    if r.returncode == 99 or "unshare failed" in r.stderr:
        pytest.skip(f"this machine allows no tmpfs in a user namespace: {r.stderr.strip()}")
    return r


LEROBOT_V21 = "0.3.3"  # the last LeRobot release that reads v2.1 datasets (OpenPI pins a v2.1 LeRobot)


@pytest.fixture(scope="session")
def lerobot_v21_python() -> Path:
    """Python of an isolated virtual environment with lerobot 0.3.3, made once per machine and
    kept in ~/.cache/slarm (or $SLARM_CACHE). Needs the package index the first time (~3 min).
    It shares the project's packages where their versions do (a .pth file puts the project's
    site-packages after its own, so pip installs only what 0.3.3 needs otherwise: its torch,
    which must be < 2.8, and CUDA libraries, most of its size); made again when those change."""
    cache = Path(os.environ.get("SLARM_CACHE", Path.home() / ".cache" / "slarm"))
    env = cache / f"lerobot-{LEROBOT_V21}"
    python = env / "bin" / "python"
    ready = env / ".slarm-ready"
    shared = sysconfig.get_paths()["purelib"]  # the project's environment: this pytest's
    want = f"{LEROBOT_V21} sharing {shared} {_installed_fingerprint()}"
    if not ready.exists() or ready.read_text() != want:
        shutil.rmtree(env, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        log = cache / f"lerobot-{LEROBOT_V21}-install.log"
        with log.open("w") as out:
            ok = subprocess.run([sys.executable, "-m", "venv", str(env)], stdout=out, stderr=out).returncode == 0
            if ok:
                own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True).stdout.strip()
                (Path(own) / "zz-slarm-shared.pth").write_text(shared + "\n")  # after its own packages
                ok = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"lerobot=={LEROBOT_V21}"],
                                    stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=1800).returncode == 0
        if not ok:
            pytest.fail(f"could not install lerobot {LEROBOT_V21} into {env}; see {log}")
        ready.write_text(want)
    return python


def _installed_fingerprint() -> str:
    """Which packages, at which versions, the project's environment holds."""
    from importlib.metadata import distributions

    names = sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions())
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
