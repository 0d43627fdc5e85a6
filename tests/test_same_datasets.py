"""The restructuring into one `slarm` package (issue 63) changed no output: the same raw files and
options give byte-identical datasets from the code before it (REFERENCE, taken from git) and now.

When a later change means to alter the datasets (a new LeRobot, a new stats rule), this test
fails; move REFERENCE to the commit before that change once the new output has been checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, tree_digest

REFERENCE = "84aeca9a766bc39438e487d08928017cba03bccf"  # main before the slarm package (top-level capture/, convert/)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def reference_code(tmp_path_factory) -> Path:
    """The convert stage as it was at REFERENCE, unpacked from git (needs the repository's history)."""
    folder = tmp_path_factory.mktemp("reference")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", REFERENCE, "capture", "convert"], capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"git has no commit {REFERENCE[:10]} here (a shallow clone?): {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def convert_with(code: Path | None, *args) -> None:
    """slarm-convert as it was at REFERENCE (code: its unpacked tree), or as it is now (None)."""
    env = dict(os.environ, PYTHONHASHSEED="0")  # LeRobot writes stats.json's keys in the order of a set
    if code is None:
        module = "slarm.convert.cli"
    else:
        module = "convert.cli"
        env["PYTHONPATH"] = str(code)
    r = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                       cwd=code or ROOT, env=env, stdin=subprocess.DEVNULL, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("options", [
    [],
    ["--format", "v2.1", "--size", "224x224", "--action", "next-state", "--joint-units", "lerobot"],
    ["--size", "96x64", "--resize-mode", "pad", "--codec", "h264", "--task", "stack the cubes"],
], ids=["v3.0", "v2.1", "v3.0-h264"])
def test_the_same_raw_files_give_the_same_dataset_as_before(raw, tmp_path, reference_code, options):
    first = sorted(raw.glob("*.h5"))[0]
    one = tmp_path / "one"  # appending: a dataset of the first episode, then the rest added to it
    one.mkdir()
    os.link(first, one / first.name)
    for name, code in (("before", reference_code), ("now", None)):
        convert_with(code, one, tmp_path / name, *options)
        convert_with(code, raw, tmp_path / name, *options)
    assert tree_digest(tmp_path / "now") == tree_digest(tmp_path / "before")
