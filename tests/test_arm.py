"""The SO-101 arm through LeRobot's Feetech bus on the simulated arm: calibration, connecting,
ports that change, another program on the port."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (
    ROOT,
    capture,
    episodes_dir,
    spawn_capture,
    write_config,
)
from recording import (
    check_episode,
    pexpect_eof,
    plug,
)

pytestmark = pytest.mark.e2e  # the commands as a user runs them (conftest.py)


def test_camera_device_given_as_text_is_the_camera_index(tmp_path):
    from slarm import config as C

    path = write_config(tmp_path, cameras=[{"name": "wrist", "device": "2"}, {"name": "top", "device": "/dev/video4"}],
                        _note="keys starting with _ are notes")
    assert [c.device for c in C.load(path).cameras] == [2, "/dev/video4"], "not a file named 2"


def test_config_that_is_not_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"dataset_name": "x",,}')
    r = capture("--config", str(path))
    assert r.returncode == 2
    assert "not valid JSON at line 1" in r.stderr


def test_missing_calibration_prints_the_calibrate_command(tmp_path):
    path = write_config(tmp_path, robot={"id": "desk_arm", "port": "/dev/ttyACM7", "calibration_dir": str(tmp_path / "cal")})
    r = capture("--config", str(path), "--episodes", "1", "--episode-time", "1")
    assert r.returncode == 2
    assert "no calibration for robot id 'desk_arm'" in r.stderr
    assert "lerobot-calibrate --robot.type=so101_follower --robot.port=/dev/ttyACM7 --robot.id=desk_arm" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_arm_not_found_says_how_to_find_its_port_and_reconnecting_stays_one_line(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import ROOT
    from slarm.capture.sim.arm_server import calibration

    (tmp_path / "cal").mkdir()
    (tmp_path / "cal" / "desk_arm.json").write_text(json.dumps(calibration()))
    port = tmp_path / "ttyACM7"  # calibrated, but not plugged in
    path = write_config(tmp_path, robot={"id": "desk_arm", "port": str(port), "calibration_dir": str(tmp_path / "cal")})
    r = capture("--config", str(path), "--episodes", "1", "--episode-time", "1", "--preview", "off")
    assert r.returncode == 1 and f"cannot connect to the arm on {port}" in r.stderr, r.stdout + r.stderr
    assert "lerobot-find-port" in r.stderr and "Traceback" not in r.stdout + r.stderr

    # unplugged mid-session: while it retries, the status line names the fault on one line
    # (in a process of its own: LeRobot's import starts threads, and later tests fork)
    code = f"""
import io
from slarm import config as C
from slarm.capture.arm import SO101Arm
from slarm.capture.session import Session
from slarm.capture.status import Output
cfg = C.load({str(path)!r})
stream = io.StringIO()
session = Session(cfg, SO101Arm(cfg.robot), [], Output(stream), keys=None, preview=None)
session.broken, session.last_retry = [session.state_source], 0.0
session._try_reconnect()
print(stream.getvalue(), end="")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    lines = [line for line in r.stdout.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(f"reconnecting arm ... (cannot connect to the arm on {port}"), r
    assert lines[0].endswith("| ESC quits")


def test_servos_that_miss_the_first_handshake_are_connected_and_a_silent_arm_is_named(tmp_path):
    """Servos powered a moment before the port opens (or a reply lost on the bus) miss LeRobot's
    handshake once: the arm is tried again for up to ANSWER_WITHIN_S, then the message says what
    to check."""
    from slarm.capture.sim import DeviceProcess

    port = tmp_path / "ttyACM0"  # the simulated arm writes its calibration into cal/
    path = write_config(tmp_path, robot={"id": "desk_arm", "port": str(port), "calibration_dir": str(tmp_path / "cal")})
    code = f"""
from slarm import config as C
from slarm.capture.arm import ArmError, SO101Arm
arm = SO101Arm(C.load({str(path)!r}).robot)
try:
    arm.connect()
    print("joints", len(arm.read()))
except ArmError as e:
    print(e)
arm.disconnect()
"""
    said = {}
    for silent in (6, 10**9):  # the six pings of one handshake; never a reply (powered off)
        arm = DeviceProcess("arm", ["slarm.capture.sim.arm_server", "--link", str(port), "--calibration-dir",
                                    str(tmp_path / "cal"), "--robot-id", "desk_arm", "--silent-packets", str(silent)],
                            tmp_path)
        arm.ensure_running()
        try:
            # in a process of its own: LeRobot's import starts threads, and later tests fork
            said[silent] = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                                          timeout=60).stdout
        finally:
            arm.stop()
    assert said[6] == "joints 6\n", said[6]
    assert said[10**9].startswith(f"cannot connect to the arm on {port}: FeetechMotorsBus motor check failed"), said
    assert "Is it plugged in and powered?" in said[10**9]


def test_motors_without_the_calibration_may_be_the_leader_arm_and_are_not_calibrated_over(tmp_path):
    """With the leader arm plugged in too, the follower's port number can be the leader's after a
    reboot or replug: its motors do not hold the follower's calibration. The message says so
    before the calibrate command, which would write the leader's calibration as the follower's."""
    from slarm.capture.sim.arm_server import calibration

    follower = calibration()  # the file: the follower's; the simulated motors hold calibration(), the leader's
    follower["shoulder_pan"]["homing_offset"] += 40
    (tmp_path / "cal").mkdir()
    cal_file = tmp_path / "cal" / "desk_arm.json"
    cal_file.write_text(json.dumps(follower))
    port = tmp_path / "ttyACM0"
    server = subprocess.Popen([sys.executable, "-m", "slarm.capture.sim.arm_server", "--link", str(port), "--calibration-dir",
                               str(tmp_path / "cal"), "--robot-id", "desk_arm"], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert server.stdout.readline().startswith(b"ready")
        path = write_config(tmp_path, robot={"id": "desk_arm", "port": str(port), "calibration_dir": str(tmp_path / "cal")})
        r = capture("--config", str(path), "--episodes", "1", "--episode-time", "1", "--preview", "off")
    finally:
        server.kill()
        server.wait()
    assert r.returncode == 2, r.stdout + r.stderr
    assert (f"error: the motors on {port} do not hold the calibration in {cal_file} (another arm, or it was "
            "recalibrated).\nIf the leader arm is plugged in too, this may be its port: serial ports are numbered in "
            "the order they are found, and can swap after a reboot or replug. Then do not calibrate (that would write "
            "the leader's calibration as the follower's): set \"port\" to the follower's (find it with "
            "lerobot-find-port; a /dev/serial/by-id/... path does not change).\nOtherwise calibrate again:\n  "
            f"lerobot-calibrate --robot.type=so101_follower --robot.port={port} --robot.id=desk_arm "
            f"--robot.calibration_dir={tmp_path / 'cal'}\n") in r.stderr, r.stderr
    assert json.loads(cal_file.read_text()) == follower, "the calibration file is left as it was"


def test_an_arm_port_given_by_number_is_shown_with_its_adapter_and_the_path_that_keeps_it(monkeypatch, tmp_path):
    """Leader and follower each have a USB serial adapter; /dev/ttyACM0 is whichever was found
    first. Connected, the arm is shown with its adapter (model, USB port, serial number) and the
    udev path that always opens that adapter."""
    from slarm.capture import device_identity
    from slarm.capture.arm import SO101Arm
    from slarm.config import RobotConfig

    monkeypatch.setattr(device_identity, "SYSFS", tmp_path / "sys" / "class")
    monkeypatch.setattr(device_identity, "DEV", tmp_path / "dev")
    plug(tmp_path, {"ttyACM0": ("USB Single Serial", "5A46083062", "1-3"), "ttyACM1": ("USB Single Serial", "5A46083059", "1-4")})
    arm = SO101Arm.__new__(SO101Arm)  # describe() needs only the config: LeRobot's robot is not built here
    arm.cfg = RobotConfig(port=str(tmp_path / "dev" / "ttyACM0"))
    by_id = tmp_path / "dev" / "serial" / "by-id" / "usb-USB_Single_Serial_5A46083062-if00"
    assert arm.describe() == (
        f"arm connected on {arm.cfg.port} (USB Single Serial (USB port 1-3, serial 5A46083062)), torque off: move it "
        f'by hand\n  note: "port": "{by_id}" always opens this arm; a number such as {arm.cfg.port} can point to '
        "another arm (the leader's) after a reboot or replug")
    arm.cfg = RobotConfig(port=str(by_id))
    assert arm.describe() == (f"arm connected on {by_id} (USB Single Serial (USB port 1-3, serial 5A46083062)), "
                              "torque off: move it by hand"), "a path that does not change: nothing to add"


SECOND_PROGRAM = """#!/usr/bin/env python3
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)
while True:
    os.read(fd, 4096)
"""


def test_another_program_on_the_arms_port_is_named_and_recording_goes_on_once_it_is_gone(config, tmp_path):
    """lerobot-teleoperate (or a second slarm-capture, with another config) left running on the
    same arm: both read the bus and take each other's replies. The episode is discarded; while
    the other program holds the port, the session names it instead of reconnecting into it; once
    it is gone, recording goes on."""
    other = tmp_path / "lerobot-teleoperate"  # a second program reading the arm's bus
    other.write_text(SECOND_PROGRAM)
    p = spawn_capture("--config", str(config), "--sim", "--episodes", "2", "--episode-time", "1.5", "--preview", "off")
    p.expect(r"simulated hardware in (\S+) \(")
    port = Path(p.match.group(1)) / "ttyARM"
    p.expect(r"saved episode 0: \d+ frames")
    p.expect("Recording episode 1")
    thief = subprocess.Popen([sys.executable, str(other), str(port)])
    try:
        p.expect("warning: ")
        p.expect(r"discarded episode 1 \(arm failed\)")
        p.expect(rf"reconnecting arm \.\.\. \(the arm's port {re.escape(str(port))} is open in another program: "
                 rf"pid {thief.pid} \(lerobot-teleoperate {re.escape(str(port))}\)")
    finally:
        thief.kill()
        thief.wait()
    p.expect("arm is back; recording can go on")
    p.expect(r"saved episode 1: \d+ frames")
    p.expect("done: 2 episodes saved, 1 discarded")
    p.expect(pexpect_eof())
    p.close()
    assert p.exitstatus == 0
    for f in sorted(episodes_dir(config).iterdir()):
        check_episode(f)
