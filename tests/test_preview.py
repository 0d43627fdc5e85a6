"""The served live preview stays on this computer unless the user asks otherwise."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, write_config

pytestmark = pytest.mark.e2e  # the commands as a user runs them (conftest.py)

PORTS = (9090, 9876)  # Rerun's web viewer and its data server


def listening(ports=PORTS) -> dict[int, set[str]]:
    """The local addresses that listen (TCP) on each of `ports`, from /proc/net/tcp and tcp6."""
    found: dict[int, set[str]] = {p: set() for p in ports}
    for table, width in (("tcp", 8), ("tcp6", 32)):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if state == "0A" and int(port, 16) in found:  # 0A: LISTEN
                found[int(port, 16)].add(_address(address, width))
    return found


def _address(hex_address: str, width: int) -> str:
    if width == 8:
        return ".".join(str(int(hex_address[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return "::" if set(hex_address) == {"0"} else hex_address


def serve(config: Path, *extra: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([*prefix, sys.executable, "-m", "slarm.capture.cli", "--config", str(config), "--sim",
                             "--episodes", "1", "--episode-time", "60", "--preview", "serve", *extra],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def read_until(proc: subprocess.Popen, start: str, timeout: float = 90) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(start) or time.monotonic() > deadline:
            break
    return lines


def test_served_preview_listens_on_this_computer_only(tmp_path):
    if any(listening().values()):
        pytest.skip(f"port {PORTS} is taken on this machine by another program")
    proc = serve(write_config(tmp_path))
    try:
        lines = read_until(proc, "recording 1 episode")
        said = "\n".join(lines)
        assert "live preview: open http://localhost:9090/?url=rerun%2Bhttp://localhost:9876/proxy in a browser" in said
        assert "ssh -L 9090:localhost:9090 -L 9876:localhost:9876 " in said, said
        assert "warning" not in said, said
        assert listening() == {9090: {"127.0.0.1"}, 9876: {"127.0.0.1"}}, said
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while any(listening().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(listening().values()), "the preview server ends with slarm-capture"


def test_listening_beyond_this_computer_is_asked_for_and_warned_about(tmp_path):
    """--preview-bind 0.0.0.0, in a network namespace of the test's own (only its loopback is
    there, so nothing really listens on this machine's network)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--net", "true"]).returncode != 0:
        pytest.skip("needs a network namespace of its own (unshare --net, as root)")
    script = ["unshare", "--net", "sh", "-c", 'ip link set lo up 2>/dev/null || true; exec "$@"', "sh"]
    proc = serve(write_config(tmp_path), "--preview-bind", "0.0.0.0", prefix=tuple(script))
    try:
        said = "\n".join(read_until(proc, "recording 1 episode"))
        assert "warning: the live preview listens on 0.0.0.0: anyone who can reach this computer there can watch " \
               "the cameras and the joints" in said, said
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
