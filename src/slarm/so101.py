"""The SO-101 arm as its recordings describe it: joint names, motor ticks per turn, and how two
calibrations stored in raw episodes differ. No device access: the convert stage reads these too."""

JOINT_NAMES = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
TICKS_PER_TURN = 4096
ZERO_TOLERANCE_DEG = 0.5  # a joint's zero moved less than this between two calibrations is not reported


def zero_shifts(before: dict, now: dict) -> list[str]:
    """Joints whose zero (where they read 0 rad: the middle of the calibrated range, in the
    motor's own position, which the homing offset shifts) differs between two calibrations
    (calibration_snapshot()) by ZERO_TOLERANCE_DEG or more, or which turn the other way:
    ["shoulder_pan's zero moved 3.2°", "gripper turns the other way"]. Recalibrating moves the
    zeros by where the joints were taken to; the same pose then reads other angles. A joint
    missing from either calibration is left out."""
    shifts = []
    for name in JOINT_NAMES:
        try:
            a, b = before[name], now[name]
            if a["drive_mode"] != b["drive_mode"]:
                shifts.append(f"{name} turns the other way")
                continue
            ticks = [c["homing_offset"] + (c["range_min"] + c["range_max"]) / 2 for c in (a, b)]
        except (KeyError, TypeError):
            continue
        moved = (ticks[1] - ticks[0] + TICKS_PER_TURN / 2) % TICKS_PER_TURN - TICKS_PER_TURN / 2  # across the wrap
        degrees = abs(moved) * 360 / (TICKS_PER_TURN - 1)
        if degrees >= ZERO_TOLERANCE_DEG:
            shifts.append(f"{name}'s zero moved {degrees:.1f}°")
    return shifts
