"""slarm-convert --ray: episodes prepared as tasks on a Ray cluster started here, a head and a
second node (tests/ray_cluster.sh), inside namespaces of their own (a network namespace with only
its loopback, a PID namespace whose end ends every Ray process: never `ray stop`). Needs root
for the namespaces, as CI has; without it these tests are skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT
from converting import convert

sys.path.insert(0, str(ROOT))  # the benchmarks package
from benchmarks.convert import make_raw  # noqa: E402

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")),
                                 reason="namespaces of its own for the Ray cluster need root, unshare and ip "
                                        "(apt-get install util-linux iproute2)")]

ADDRESS = "127.0.0.1:6379"


def on_cluster(script: str, timeout: float = 400, **env: str) -> subprocess.CompletedProcess:
    """Run bash `script` beside a fresh two-node Ray cluster at ADDRESS; its output. env: for
    ray_cluster.sh (HIDDEN_ON_SECOND_NODE)."""
    tmp = tempfile.mkdtemp(prefix="slarm-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    try:
        return subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash",
                               str(ROOT / "tests" / "ray_cluster.sh"), tmp, "bash", "-c", script],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env={**os.environ, "PATH": path, **env})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def files(root: Path) -> dict[str, bytes]:
    """Every file of a dataset but its stats (compared as values: JSON key order may differ)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "stats.json"}


def same_dataset(a: Path, b: Path) -> None:
    fa, fb = files(a), files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name == "meta/slarm.json":
            continue  # where each episode came from: the same, checked below
        assert fa[name] == fb[name], f"{name} differs"
    assert json.loads(fa["meta/slarm.json"])["episodes"] == json.loads(fb["meta/slarm.json"])["episodes"]
    if (a / "meta/stats.json").exists() or (b / "meta/stats.json").exists():  # v3.0
        assert json.loads((a / "meta/stats.json").read_text()) == json.loads((b / "meta/stats.json").read_text())


@pytest.fixture(scope="module")
def six(tmp_path_factory) -> Path:
    """Six raw episodes of 60 frames (1080p JPEGs)."""
    folder = tmp_path_factory.mktemp("ray") / "raw" / "so101_pickplace_v1"
    make_raw(folder, 6, 60)
    return folder


def test_a_conversion_on_ray_equals_a_local_one_also_when_a_worker_is_killed(six, tmp_path):
    """Spread over both nodes, episode for episode the dataset a local run writes (v3.0 and
    v2.1); a Ray worker process killed in the middle of an episode: Ray runs the task again and
    the dataset is still complete and the same; slarm-convert killed: the same command again
    completes it."""
    for fmt in ("v3.0", "v2.1"):
        r = convert(six, tmp_path / f"local-{fmt}", "--workers", "2", "--format", fmt)
        assert r.returncode == 0, r.stdout + r.stderr
    ray = f"python -m slarm.convert.cli {six} {{out}} --ray {ADDRESS} {{args}}"
    r = on_cluster(f"""
        {ray.format(out=tmp_path / 'ray-v3.0', args='')} || exit
        {ray.format(out=tmp_path / 'ray-v2.1', args='--format v2.1')} || exit
        {ray.format(out=tmp_path / 'killed', args='')} & convert=$!
        until worker=$(pgrep -f '^ray::_run_on_node' | head -1) && [ -n "$worker" ]; do sleep 0.05; done
        kill -9 "$worker" && echo "killed the Ray worker running an episode"
        wait $convert || exit
        {ray.format(out=tmp_path / 'interrupted', args='')} & convert=$!
        until pgrep -f '^ray::_run_on_node' >/dev/null; do sleep 0.05; done
        kill -9 $convert; wait $convert; echo "killed slarm-convert: $?"
        {ray.format(out=tmp_path / 'interrupted', args='')}""")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert out.count("ray: 6 episodes prepared on 2 of the cluster's 2 nodes") == 4, out
    assert out.count("done: 6 episodes added, 0 already there; 360 frames") == 4, out
    assert "killed the Ray worker running an episode" in out and "killed slarm-convert: 137" in out
    assert "Traceback" not in out
    same_dataset(tmp_path / "local-v3.0", tmp_path / "ray-v3.0")
    same_dataset(tmp_path / "local-v2.1", tmp_path / "ray-v2.1")
    same_dataset(tmp_path / "local-v3.0", tmp_path / "killed")
    same_dataset(tmp_path / "local-v3.0", tmp_path / "interrupted")  # run again after a kill -9


def test_a_node_that_cannot_read_the_raw_files_is_named_before_any_work(six, tmp_path):
    """The second node runs where the raw folders are not mounted: slarm-convert refuses at the
    start (exit 2), naming the node and the files, and writes no dataset."""
    out = tmp_path / "ds"
    r = on_cluster(f"python -m slarm.convert.cli {six} {out} --ray {ADDRESS}",
                   HIDDEN_ON_SECOND_NODE=str(six.parent))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--ray: node 127.0.0.1 (" in r.stderr and f"cannot read {six}/episode_000000.h5" in r.stderr, r.stderr
    assert "No such file or directory" in r.stderr and "the same path" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".ds*")), "nothing written, not even a lock file"


def test_without_ray_installed_the_message_says_how_to_install_it(six, tmp_path):
    code = ("import sys; sys.modules['ray'] = None; sys.argv[1:] = " + repr([str(six), str(tmp_path / 'ds'), '--ray',
                                                                           'auto'])
            + "; from slarm.convert.cli import run; run()")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --ray needs Ray, which is not installed here: pip install 'slarm[ray]'", r.stderr
    assert not (tmp_path / "ds").exists()


def test_no_cluster_at_the_address_is_refused_with_how_to_start_one(six, tmp_path):
    r = subprocess.run(["unshare", "--net", "bash", "-c", f"ip link set lo up; exec {sys.executable} -m "
                        f"slarm.convert.cli {six} {tmp_path / 'ds'} --ray 127.0.0.1:6390"],
                       cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--ray 127.0.0.1:6390: no Ray cluster could be joined there" in r.stderr, r.stderr
    assert "ray start --head" in r.stderr and "Traceback" not in r.stderr
