"""A gamepad as the state source: stick and trigger axes (and chosen buttons) as float32.

Read through SDL's game-controller layer (pygame._sdl2.controller), so `left_x` is the left
stick's x whatever the pad's brand: SDL maps the pad's raw axes with its controller database
(extend it with SDL_GAMECONTROLLERCONFIG for an unknown pad). Headless: no window, no event
loop; each read asks SDL to poll the device. Sticks in [-1, 1] (SDL's sign: y is positive
downward), triggers and buttons in [0, 1].
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from slarm.config import GAMEPAD_BUTTONS, RobotConfig
from slarm.errors import SlarmError

AXES = ("left_x", "left_y", "right_x", "right_y", "l2_trigger", "r2_trigger")
_STICK = 32767.0  # SDL axis range: sticks -32768..32767, triggers 0..32767


class GamepadError(SlarmError):
    """The gamepad cannot be read (unplugged, no mapping, no permission)."""


def sdl():
    """pygame's SDL game-controller module, initialised, without pygame's banner or a window."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pygame's pkg_resources deprecation notice
        import pygame
        import pygame._sdl2.controller as controller
    pygame.joystick.init()
    controller.init()
    return controller


class Gamepad:
    """Reads [left_x, left_y, right_x, right_y, l2_trigger, r2_trigger] + the configured buttons."""

    robot_type = "gamepad"
    label = "gamepad"
    units = "normalized"

    def __init__(self, cfg: RobotConfig):
        self.cfg = cfg
        self.state_names = list(AXES) + list(cfg.buttons)
        self._buttons = [GAMEPAD_BUTTONS.index(b) for b in cfg.buttons]  # SDL_GameControllerButton
        self._sdl = None
        self._pad = None
        self.name = ""

    def connect(self) -> None:
        self._sdl = sdl()
        self._sdl.update()  # notices pads plugged in since the last look
        count = self._sdl.get_count()
        if count <= self.cfg.index:
            raise GamepadError(
                f"no gamepad #{self.cfg.index}: SDL sees {count} joystick(s). Plug the pad in (USB or paired "
                "Bluetooth); on Linux the user needs read access to /dev/input/event* (group 'input')")
        if not self._sdl.is_controller(self.cfg.index):
            raise GamepadError(
                f"joystick #{self.cfg.index} is not in SDL's game-controller database, so its axes cannot be "
                "named; give its mapping in SDL_GAMECONTROLLERCONFIG (see SDL_GameControllerDB)")
        self._pad = self._sdl.Controller(self.cfg.index)
        self.name = self._pad.name

    def read(self) -> np.ndarray:
        pad = self._pad
        if pad is None:
            raise GamepadError("gamepad not connected")
        self._sdl.update()
        if not pad.attached():
            raise GamepadError(f"gamepad '{self.name}' was unplugged")
        values = [pad.get_axis(a) for a in range(6)] + [pad.get_button(b) for b in self._buttons]
        out = np.array(values, dtype=np.float32)
        out[:6] /= _STICK
        return np.clip(out, -1.0, 1.0, out=out)

    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.state_names)
        lower = np.zeros(n, np.float32)
        lower[:4] = -1.0
        return lower, np.ones(n, np.float32)

    def calibration_snapshot(self) -> dict:
        """What the axes mean: the controller's name and SDL's mapping of its raw inputs."""
        return {"controller": self.name, "index": self.cfg.index, "sdl_mapping": self._mapping()}

    def describe(self) -> str:
        return f"gamepad '{self.name}' connected: {len(self.state_names)} values ({', '.join(self.state_names)})"

    def disconnect(self) -> None:
        if self._pad is not None:
            try:
                self._pad.quit()
            except Exception:
                pass
            self._pad = None

    def _mapping(self) -> dict:
        try:
            return dict(self._pad.get_mapping()) if self._pad is not None else {}
        except Exception:
            return {}
