"""A simulated SO-101 arm: six STS3215 servos speaking the Feetech protocol on a pseudo-terminal.

Run as its own process (`python -m slarm.capture.sim.arm_server --link PATH ...`). It opens a
pseudo-terminal, points the symlink PATH at it, writes a LeRobot calibration file for the
robot id, and answers instruction packets (ping, read, write, sync read, sync write) from
a register table per servo, so LeRobot's FeetechMotorsBus runs against it unchanged.
Present_Position follows smooth trajectories inside each joint's calibrated range, as a
person moving the arm by hand would. Writes to Torque_Enable and Goal_Position are
appended to an event file, so tests can check the torque was never switched on, and where the
arm was sent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import sys
import time
import tty
from pathlib import Path

from slarm.common import alive as _alive

MOTOR_NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
# Calibrated ranges (raw ticks, 4096 a turn) and homing offsets as lerobot-calibrate would write them.
RANGES = [(760, 3340), (820, 3230), (850, 3100), (860, 3190), (0, 4095), (2030, 3460)]
HOMING_OFFSETS = [-1045, 512, -833, 296, -17, 1203]
MODEL_NUMBER = 777  # sts3215
FIRMWARE = (3, 10)

INST_PING, INST_READ, INST_WRITE, INST_REG_WRITE, INST_ACTION = 1, 2, 3, 4, 5
INST_SYNC_READ, INST_SYNC_WRITE = 0x82, 0x83
BROADCAST_ID = 0xFE
ADDR_MIN_LIMIT, ADDR_MAX_LIMIT, ADDR_HOMING, ADDR_TORQUE, ADDR_GOAL_POS, ADDR_PRESENT_POS = 9, 11, 31, 40, 42, 56


def calibration() -> dict:
    """The calibration file content (LeRobot's MotorCalibration fields per motor)."""
    return {
        name: {"id": i + 1, "drive_mode": 0, "homing_offset": HOMING_OFFSETS[i],
               "range_min": RANGES[i][0], "range_max": RANGES[i][1]}
        for i, name in enumerate(MOTOR_NAMES)
    }


def _sign_magnitude(value: int, sign_bit: int) -> int:
    return (-value | (1 << sign_bit)) if value < 0 else value


class Servo:
    def __init__(self, index: int):
        self.id = index + 1
        self.index = index
        self.memory = bytearray(256)
        self.memory[0], self.memory[1] = FIRMWARE
        self._put(3, MODEL_NUMBER)
        self.memory[5] = self.id
        lo, hi = RANGES[index]
        self._put(ADDR_MIN_LIMIT, lo)
        self._put(ADDR_MAX_LIMIT, hi)
        self._put(ADDR_HOMING, _sign_magnitude(HOMING_OFFSETS[index], 11))
        self.memory[ADDR_TORQUE] = 0

    def _put(self, addr: int, value: int) -> None:
        self.memory[addr] = value & 0xFF
        self.memory[addr + 1] = (value >> 8) & 0xFF

    def position(self, t: float) -> int:
        """Smooth hand-guided motion: two slow sines per joint, inside the calibrated range."""
        lo, hi = RANGES[self.index]
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        f1, f2 = 0.11 + 0.03 * self.index, 0.27 + 0.05 * self.index
        x = 0.6 * math.sin(2 * math.pi * f1 * t + self.index) + 0.3 * math.sin(2 * math.pi * f2 * t + 2 * self.index)
        return int(round(mid + 0.85 * half * x))

    def read(self, addr: int, length: int, t: float) -> bytes:
        self._put(ADDR_PRESENT_POS, _sign_magnitude(self.position(t), 15))
        return bytes(self.memory[addr : addr + length])

    def write(self, addr: int, data: bytes) -> None:
        self.memory[addr : addr + len(data)] = data


def status_packet(servo_id: int, params: bytes = b"", error: int = 0) -> bytes:
    body = bytes([servo_id, len(params) + 2, error]) + params
    return b"\xff\xff" + body + bytes([~sum(body) & 0xFF])


class Bus:
    def __init__(self, events: Path | None):
        self.servos = {s.id: s for s in (Servo(i) for i in range(len(MOTOR_NAMES)))}
        self.events = events
        self.t0 = time.monotonic()

    def handle(self, sid: int, inst: int, params: bytes) -> bytes:
        t = time.monotonic() - self.t0
        out = b""
        if inst == INST_PING:
            ids = self.servos if sid == BROADCAST_ID else [sid] if sid in self.servos else []
            out = b"".join(status_packet(i) for i in ids)
        elif inst == INST_READ and sid in self.servos:
            out = status_packet(sid, self.servos[sid].read(params[0], params[1], t))
        elif inst in (INST_WRITE, INST_REG_WRITE):
            targets = self.servos.values() if sid == BROADCAST_ID else [self.servos[sid]] if sid in self.servos else []
            for s in targets:
                self._write(s, params[0], params[1:])
            if sid in self.servos:
                out = status_packet(sid)
        elif inst == INST_SYNC_READ:
            addr, length = params[0], params[1]
            out = b"".join(
                status_packet(i, self.servos[i].read(addr, length, t)) for i in params[2:] if i in self.servos
            )
        elif inst == INST_SYNC_WRITE:
            addr, length = params[0], params[1]
            for k in range(2, len(params), length + 1):
                if params[k] in self.servos:
                    self._write(self.servos[params[k]], addr, params[k + 1 : k + 1 + length])
        return out

    def _write(self, servo: Servo, addr: int, data: bytes) -> None:
        servo.write(addr, data)
        if self.events is None:
            return
        if addr <= ADDR_TORQUE < addr + len(data):
            with self.events.open("a") as f:
                f.write(f"torque {servo.id} {data[ADDR_TORQUE - addr]}\n")
        if addr <= ADDR_GOAL_POS and ADDR_GOAL_POS + 1 < addr + len(data):
            value = int.from_bytes(data[ADDR_GOAL_POS - addr : ADDR_GOAL_POS - addr + 2], "little")
            with self.events.open("a") as f:  # sign-magnitude, sign bit 15
                f.write(f"goal {servo.id} {-(value & 0x7FFF) if value & 0x8000 else value}\n")


def parse_packets(buf: bytearray):
    """Yield (id, instruction, params) for each complete, valid packet; consume them from buf."""
    while True:
        start = buf.find(b"\xff\xff")
        if start < 0:
            del buf[:-1]
            return
        del buf[:start]
        if len(buf) < 4:
            return
        length = buf[3]
        total = length + 4
        if length < 2:
            del buf[:2]
            continue
        if len(buf) < total:
            return
        packet = bytes(buf[:total])
        del buf[:total]
        if (~sum(packet[2:-1]) & 0xFF) != packet[-1]:
            continue  # corrupt: a real servo stays silent
        yield packet[2], packet[4], packet[5:-1]


def serve(link: Path, calibration_dir: Path, robot_id: str, events: Path | None, parent_pid: int | None,
          silent_packets: int = 0) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    slave_name = os.ttyname(slave)
    os.close(slave)  # as with a real port, only the program talking to the arm holds it open
    calibration_dir.mkdir(parents=True, exist_ok=True)
    cal_file = calibration_dir / f"{robot_id}.json"
    if not cal_file.exists():
        cal_file.write_text(json.dumps(calibration(), indent=4))
    tmp_link = link.with_name(link.name + ".new")
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(slave_name)
    tmp_link.replace(link)
    print(f"ready {slave_name}", flush=True)

    bus = Bus(events)
    buf = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if parent_pid and not _alive(parent_pid):
            return
        if not ready:
            continue
        try:
            buf += os.read(master, 4096)
        except OSError:
            time.sleep(0.01)  # no reader on the other side yet
            continue
        for sid, inst, params in parse_packets(buf):
            if silent_packets > 0:  # servos still powering up
                silent_packets -= 1
                continue
            reply = bus.handle(sid, inst, params)
            if reply:
                os.write(master, reply)



def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--link", type=Path, required=True, help="symlink to create, pointing at the serial port")
    p.add_argument("--calibration-dir", type=Path, required=True)
    p.add_argument("--robot-id", required=True)
    p.add_argument("--events", type=Path, help="append torque and goal position writes here")
    p.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    p.add_argument("--silent-packets", type=int, default=0,
                   help="answer none of the first N packets, as servos that are still powering up")
    a = p.parse_args(argv)
    try:
        serve(a.link, a.calibration_dir, a.robot_id, a.events, a.parent_pid, a.silent_packets)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
