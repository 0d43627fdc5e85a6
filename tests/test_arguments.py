"""The fast layer's command-line checks, in this process: what each command refuses before any
work (exit status 2, one line saying what to change), through the one place that maps errors
to messages and exit statuses (slarm.errors.exit_status)."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, write_config
from slarm import config as C
from slarm.capture.cli import main as capture_main
from slarm.convert.cli import main as convert_main
from slarm.errors import EXIT_FAILURE, EXIT_USAGE, Interrupted, Refused, SlarmError, exit_status
from slarm.inspect.cli import main as inspect_main


def run(command, *args) -> int:
    return exit_status(command, [str(a) for a in args])


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"recording": {"fps": "thirty"}}, "recording.fps: expected a whole number"),
        ({"recording": {}}, "recording.fps: missing"),
        ({"camera": {"name": "wrist", "capture_width": 0}}, "camera.capture_width: 0 is out of range"),
        ({"camera": {"name": "wrist", "backend": "v4l"}}, "camera.backend: expected one of mjpeg, opencv"),
        ({"robot": {"id": "x"}}, "robot.port: missing"),
        ({"dataset_name": "a/b"}, "dataset_name: 'a/b' must be a folder name"),
        ({"hub": {"push_to_hub": True, "repo_id": None}}, "hub.repo_id: required when hub.push_to_hub is true"),
        ({"camera": {"name": "wrist", "capture_widht": 1280}},
         "camera.capture_widht: not a setting (did you mean capture_width?)"),
        ({"cameras": [{"name": "top"}, {"name": "wrist", "fsp": 15}]}, "cameras[1].fsp: not a setting (did you mean fps?)"),
        ({"fps": 15}, 'fps: not a setting (it goes inside "recording": {...})'),
    ],
)
def test_bad_config_names_the_field(tmp_path, capsys, change, expected):
    path = write_config(tmp_path, **change)
    assert run(capture_main, "--config", path, "--sim", "--episodes", "1", "--episode-time", "1") == EXIT_USAGE
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err




def test_the_shipped_configs_are_valid():
    for name in ("config.json", "config-gamepad.json"):
        cfg = C.load(ROOT / name)
        assert cfg.cameras and cfg.fps > 0, name


@pytest.mark.parametrize("args, expected", [
    (["--size", "256"], "expected WIDTHxHEIGHT"),
    (["--size", "4x4"], "between 8 and 4096 pixels"),
    (["--task", "  "], "give the task in words"),
    (["--workers", "0"], "--workers"),
    (["--format", "v2.0"], "'v2.0' is not one of"),
    (["--push-to-hub", "no-namespace"], "not a Hub repository id"),
])
def test_convert_refuses_a_bad_option_before_any_work(tmp_path, capsys, args, expected):
    raw = tmp_path / "raw"
    raw.mkdir()
    assert run(convert_main, raw, tmp_path / "ds", *args) == EXIT_USAGE
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_convert_names_a_raw_folder_that_is_not_there_or_holds_no_episodes(tmp_path, capsys):
    assert run(convert_main, tmp_path / "nope", tmp_path / "ds") == EXIT_USAGE
    assert f"error: {tmp_path / 'nope'}: no such folder of raw episodes" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run(convert_main, tmp_path / "empty", tmp_path / "ds") == EXIT_USAGE
    assert str(tmp_path / "empty") in capsys.readouterr().err


def test_convert_takes_one_image_size_from_a_config(tmp_path, capsys):
    cfg = json.loads((ROOT / "config.json").read_text())
    cfg["cameras"] = [{"name": "a", "target_width": 224, "target_height": 224},
                      {"name": "b", "target_width": 256, "target_height": 256}]
    del cfg["camera"]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    (tmp_path / "raw").mkdir()
    assert run(convert_main, tmp_path / "raw", tmp_path / "ds", "--config", path) == EXIT_USAGE
    assert "the cameras' target sizes differ (a 224x224, b 256x256)" in capsys.readouterr().err


def test_inspect_refuses_what_it_cannot_do(tmp_path, capsys):
    assert run(inspect_main, tmp_path / "nope") == EXIT_USAGE
    assert "no such folder or episode file" in capsys.readouterr().err
    assert run(inspect_main, tmp_path, "--save", tmp_path / "x.rrd") == EXIT_USAGE
    assert "--save goes with --rerun EPISODE" in capsys.readouterr().err
    assert run(inspect_main, tmp_path, "--plot", tmp_path / "x.gif") == EXIT_USAGE
    assert "give a file name ending in .png" in capsys.readouterr().err


def test_capture_needs_episodes_and_episode_time_together(config, capsys):
    assert run(capture_main, "--config", config, "--episodes", "2") == EXIT_USAGE
    assert "--episodes and --episode-time go together" in capsys.readouterr().err


def test_each_error_carries_its_exit_status_and_says_it_once(capsys):
    import click

    def command(error):
        return click.command()(lambda: (_ for _ in ()).throw(error))

    for error, status in ((Refused("bad option"), EXIT_USAGE), (SlarmError("disk gone"), EXIT_FAILURE),
                          (Interrupted("interrupted: kept"), 130), (KeyboardInterrupt(), 130),
                          (ValueError("a bug"), EXIT_FAILURE)):
        assert exit_status(command(error), []) == status, error
        err = capsys.readouterr().err
        assert err.count("error: ") == 1 and "Traceback" not in err, err
    assert exit_status(command(SlarmError("said already", shown=True)), []) == EXIT_FAILURE
    assert capsys.readouterr().err == ""
