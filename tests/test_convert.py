"""slarm-convert end to end: raw episodes from `slarm-capture --sim` -> LeRobot v3.0, read back by
LeRobot: the dataset, appending, workers, kills and stops, locks, disks, damaged frames."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import RECALIBRATED, ROOT, capture, episodes_dir, on_small_disk, recalibrate, tree_digest, write_config
from converting import children, column, convert, load, stat_field
from slarm.capture.sim.camera_server import barcode_value
from slarm.convert.frames import to_image
from slarm.convert.timeline import grid_rows
from slarm.convert.workers import WORKER_NICENESS, usable_cores
from slarm.raw import open_episode


def test_converted_dataset_loads_in_lerobot(raw, tmp_path):
    out = tmp_path / "ds"
    r = convert(raw, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "done: 2 episodes added, 0 already there; 90 frames" in r.stdout
    assert "frames/s" in r.stdout
    assert "calibration" not in r.stderr, "one arm, one calibration: nothing to say"
    assert "another camera" not in r.stderr, "one camera under each name: nothing to say"

    ds = load(out)
    assert ds.num_episodes == 2 and len(ds) == 90
    assert ds.meta.robot_type == "so101"
    assert ds.meta.info.codebase_version == "v3.0"
    assert ds.features["observation.state"]["names"] == ["shoulder_pan", "shoulder_lift", "elbow_flex",
                                                        "wrist_flex", "wrist_roll", "gripper"]
    item = ds[10]
    assert tuple(item["observation.images.wrist"].shape) == (3, 256, 256)
    assert item["task"] == "pick up the red cube and place it in the box"
    np.testing.assert_array_equal(column(ds, "action"), column(ds, "observation.state"))
    ts = column(ds, "timestamp")[:45]
    np.testing.assert_allclose(ts, np.arange(45) / 30, atol=1e-4)

    stats = json.loads((out / "meta" / "stats.json").read_text())
    for key in ("observation.state", "action", "observation.images.wrist"):
        for stat in ("mean", "std", "min", "max", "q01", "q99"):
            assert stat in stats[key], (key, stat)
    assert np.array(stats["observation.images.wrist"]["mean"]).shape == (3, 1, 1), "per-channel image stats"

    with open_episode(sorted(raw.glob("*.h5"))[0]) as ep:
        rows = grid_rows(ep.tick_index)[0]  # a tick missed under load repeats the row before, as in the dataset
        np.testing.assert_allclose(column(ds, "observation.state")[:45], ep.state[rows], atol=1e-6)
        expected = to_image(ep.frame("wrist", 10), 256, 256, "stretch", scale=1)  # full-size decode
        seq = ep.cameras["wrist"].frame_seq[10]
    got = (item["observation.images.wrist"].numpy().transpose(1, 2, 0) * 255).round()
    assert np.abs(got - expected).mean() < 8, "decoded frame close to the source frame resized"
    assert barcode_value(got.astype(np.uint8)) == seq % 128, "the right frame at the right index"


def test_converting_and_appending_leave_nothing_in_the_users_cache(raw, tmp_path):
    """LeRobot's reads of parquet files make Arrow copies of them in the datasets library's cache:
    in ~/.cache/huggingface/datasets each run left 2 to 4 copies of the dataset's table, under
    names no later run reads. They now go with the work folder."""
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(sorted(raw.glob("*.h5"))[0], first)
    env = os.environ | {"HF_HOME": str(tmp_path / "hf")}
    out = tmp_path / "ds"
    for folder in (first, raw):  # a new dataset, then an append
        r = subprocess.run([sys.executable, "-m", "slarm.convert.cli", str(folder), str(out)], capture_output=True,
                           text=True, cwd=ROOT, stdin=subprocess.DEVNULL, timeout=300, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
    left = [p for p in (tmp_path / "hf").rglob("*") if p.is_file()]
    assert not left, f"{len(left)} files left in the user's cache, e.g. {left[:1]}"
    assert load(out).num_episodes == 2


def test_a_work_folder_of_another_dataset_beside_it_is_left_alone(raw, tmp_path):
    """datasets/ds and datasets/ds-224 converted at once (two batch jobs): the run into ds removes
    the work folders that killed runs into ds left, not the live one of the run into ds-224."""
    theirs, killed = tmp_path / ".slarm-work-ds-224-4242", tmp_path / ".slarm-work-ds-4242"
    (theirs / "dataset").mkdir(parents=True)
    killed.mkdir()
    r = convert(raw, tmp_path / "ds")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (theirs / "dataset").is_dir() and not killed.exists()


def test_rerun_adds_nothing_and_a_new_episode_is_appended(recorded, raw, tmp_path):
    out = tmp_path / "ds"
    assert convert(raw, out).returncode == 0
    before = tree_digest(out)
    r = convert(raw, out)
    assert r.returncode == 0
    assert "nothing to add: " in r.stdout and "already holds all 2 episodes" in r.stdout
    assert tree_digest(out) == before
    r = convert(out, tmp_path / "ds2")  # the two folders swapped
    assert r.returncode == 2 and f"{out} is a LeRobot dataset, not a folder of raw episodes (slarm-convert RAW_DIR " \
        "DATASET_DIR: the raw folder comes first)" in r.stderr
    assert tree_digest(out) == before and not (tmp_path / "ds2").exists()

    cfg = write_config(tmp_path, raw_dir=str(tmp_path / "raw"))
    r = capture("--config", str(cfg), "--sim", "--episodes", "1", "--episode-time", "1", "--preview", "off")
    assert r.returncode == 0, r.stdout
    r = convert(raw, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "done: 1 episode added, 2 already there; 30 frames" in r.stdout
    ds = load(out)
    assert ds.num_episodes == 3 and len(ds) == 120


def test_episodes_recorded_after_the_arm_was_recalibrated_are_named(raw, tmp_path):
    """Episodes of one raw folder recorded with another calibration of the arm read other joint
    angles for the same pose: the conversion names them and says by how much, and goes on."""
    recalibrate(raw / "episode_000001.h5")
    r = convert(raw, tmp_path / "ds")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (f"warning: episode_000001.h5 was recorded with another calibration of the arm than episode_000000.h5 "
            f"({RECALIBRATED}): the same pose reads other joint angles in them; convert them into a separate "
            "dataset if that matters") in r.stderr, r.stderr
    assert "done: 2 episodes added" in r.stdout


def test_episodes_recorded_with_another_camera_under_a_name_are_named(raw, tmp_path):
    """Camera numbers change order after a reboot or replug, and the wrist camera's name can then
    record the top view: episodes whose camera under a name was another one than in the first are
    named, with how to look at one, and the conversion goes on."""
    with h5py.File(raw / "episode_000001.h5", "r+") as f:
        f["cameras/wrist"].attrs.update({"model": "Integrated Webcam", "serial": "", "port": "USB port 1-6"})
    r = convert(raw, tmp_path / "ds")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("warning: episode_000001.h5 was recorded with another camera as 'wrist', Integrated Webcam (USB port "
            "1-6), than episode_000000.h5, slarm simulated camera (simulated port 0): camera numbers change order "
            f"after a reboot or replug, so check that they show the same view (slarm-inspect {raw} --rerun 1); "
            "convert them into a separate dataset if not") in r.stderr, r.stderr
    assert "done: 2 episodes added" in r.stdout


def lerobot_so101(calibration: dict, folder: Path):
    """LeRobot's so101_follower as lerobot-rollout makes it (its defaults), with this calibration
    (the motors need not be there: only its bus's normalization is asked)."""
    from lerobot.robots.so_follower import SOFollower, SOFollowerRobotConfig

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "arm.json").write_text(json.dumps(calibration))
    return SOFollower(SOFollowerRobotConfig(port="/dev/null", id="arm", calibration_dir=folder))


def motor_ticks(calibration: dict, radians: np.ndarray) -> np.ndarray:
    """(T, 6) SO-101 radians -> the motor positions (raw ticks, unrounded) they were read from."""
    names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    mid = np.array([(calibration[m]["range_min"] + calibration[m]["range_max"]) / 2 for m in names])
    sign = np.array([-1 if calibration[m]["drive_mode"] else 1 for m in names])
    return mid + radians.astype(np.float64) * sign * 4095 / (2 * np.pi)


def test_lerobot_joint_units_are_what_lerobots_so101_follower_reads(raw, tmp_path):
    """--joint-units lerobot: each frame's state is what LeRobot's so101_follower reads at the
    motor positions recorded, from the episode's own calibration (the second one's elbow motor
    turned the other way), under the names of its actions; a policy trained on it runs through
    that robot class as is. A dataset in LeRobot's units takes no episodes in radians."""
    recalibrate(raw / "episode_000001.h5")
    out = tmp_path / "ds"
    r = convert(raw, out, "--joint-units", "lerobot")
    assert r.returncode == 0, r.stdout + r.stderr
    ds = load(out)
    state, episode = column(ds, "observation.state"), column(ds, "episode_index")
    np.testing.assert_array_equal(column(ds, "action"), state)
    for e, path in enumerate(sorted(raw.glob("*.h5"))):
        with open_episode(path) as ep:
            cal, recorded = ep.attrs["calibration"], ep.state[grid_rows(ep.tick_index)[0]]
        robot = lerobot_so101(cal, tmp_path / f"calibration-{e}")
        assert ds.features["action"]["names"] == list(robot.action_features)
        assert ds.features["observation.state"]["names"] == list(robot.action_features)
        motors = list(robot.bus.motors)
        ticks = motor_ticks(cal, recorded)  # the motor positions read while recording
        assert np.abs(ticks - ticks.round()).max() < 0.01
        reads = [robot.bus._normalize({robot.bus.motors[m].id: int(t) for m, t in zip(motors, row)})
                 for row in ticks.round()]
        lerobot = np.array([[read[robot.bus.motors[m].id] for m in motors] for read in reads])
        np.testing.assert_allclose(state[episode == e], lerobot, atol=1e-3)
        assert 0 <= lerobot[:, -1].min() and lerobot[:, -1].max() <= 100, "the gripper from 0 to 100"
        assert np.abs(lerobot[:, :-1]).max() > 10, "the joints in degrees"

    before = tree_digest(out)
    r = convert(raw, out)
    assert r.returncode == 2
    assert "does not match these episodes (dataset vs this run): joint_units lerobot vs rad." in r.stderr, r.stderr
    assert tree_digest(out) == before


def test_lerobot_joint_units_follow_lerobots_normalization_over_the_whole_turn(tmp_path):
    """Each joint over the whole turn, motors turned the other way (drive_mode 1), the gripper
    past its calibrated range (LeRobot holds it to 0-100): the radians slarm-capture reads, in
    LeRobot's units, are what LeRobot's so101_follower reads at the same motor positions."""
    from slarm.capture.arm import SO101Arm
    from slarm.capture.sim.arm_server import calibration
    from slarm.config import RobotConfig
    from slarm.convert import joint_units
    from slarm.convert.sources import Source
    from slarm.so101 import JOINT_NAMES

    cal = calibration()
    cal["elbow_flex"]["drive_mode"] = cal["gripper"]["drive_mode"] = 1
    lerobot_so101(cal, tmp_path)
    arm = SO101Arm(RobotConfig(id="arm", port="/dev/null", calibration_dir=str(tmp_path)))
    ticks = np.linspace(0, 4095, 64).round().astype(int)
    radians = np.stack([arm.radians(np.full(6, t)) for t in ticks])
    src = Source(tmp_path / "episode.h5", "uuid", len(ticks), 30, "task", "so101", JOINT_NAMES, (),
                 arm.calibration_snapshot(), {})
    ours = joint_units.convert(radians, src, "lerobot")
    bus = arm.robot.bus
    for t, row in zip(ticks, ours):
        read = bus._normalize({bus.motors[m].id: int(t) for m in JOINT_NAMES})
        np.testing.assert_allclose(row, [read[bus.motors[m].id] for m in JOINT_NAMES], atol=1e-3)
    assert ours[0, -1] == 100 and ours[-1, -1] == 0, "the gripper held to its range, turned the other way"


def test_new_resolution_into_another_folder(raw, tmp_path):
    r = convert(raw, tmp_path / "ds224", "--size", "224x224", "--resize-mode", "crop", "--workers", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    ds = load(tmp_path / "ds224")
    assert tuple(ds[0]["observation.images.wrist"].shape) == (3, 224, 224)


def test_mismatched_append_is_refused_and_dataset_untouched(raw, tmp_path):
    out = tmp_path / "ds"
    assert convert(raw, out).returncode == 0
    before = tree_digest(out)
    r = convert(raw, out, "--size", "224x224")
    assert r.returncode == 2
    assert "width 256 vs 224" in r.stderr and "Convert into a new DATASET_DIR" in r.stderr
    r = convert(raw, out, "--action", "next-state")
    assert r.returncode == 2 and "action state vs next-state" in r.stderr
    assert tree_digest(out) == before


def test_action_next_state_value_by_value(raw, tmp_path):
    assert convert(raw, tmp_path / "ds", "--action", "next-state").returncode == 0
    ds = load(tmp_path / "ds")
    state, action, ep = column(ds, "observation.state"), column(ds, "action"), column(ds, "episode_index")
    for e in np.unique(ep):
        s, a = state[ep == e], action[ep == e]
        np.testing.assert_array_equal(a[:-1], s[1:])
        np.testing.assert_array_equal(a[-1], s[-1])


def test_one_and_two_workers_give_the_same_data(raw, tmp_path):
    assert convert(raw, tmp_path / "w1", "--workers", "1").returncode == 0
    assert convert(raw, tmp_path / "w2", "--workers", "2").returncode == 0
    a, b = load(tmp_path / "w1"), load(tmp_path / "w2")
    assert (a.num_episodes, len(a)) == (b.num_episodes, len(b))
    for key in ("observation.state", "action", "timestamp", "frame_index", "episode_index", "index"):
        np.testing.assert_array_equal(column(a, key), column(b, key))
    for i in (0, 44, 45, 89):
        diff = (a[i]["observation.images.wrist"] - b[i]["observation.images.wrist"]).abs().mean()
        assert diff < 0.01


def one_episode_dataset(raw: Path, tmp_path: Path) -> Path:
    """tmp_path/ds converted from the first raw episode alone, so that converting `raw` appends."""
    out = tmp_path / "ds"
    first = tmp_path / "first" / "so101_pickplace_v1"
    first.mkdir(parents=True)
    shutil.copy(sorted(raw.glob("*.h5"))[0], first)
    assert convert(first, out).returncode == 0
    return out


def start_until(marker: str, raw: Path, out: Path, **popen) -> subprocess.Popen:
    """`slarm-convert raw out --workers 1`, returned once `marker` appears in its work folder."""
    proc = subprocess.Popen([sys.executable, "-m", "slarm.convert.cli", str(raw), str(out), "--workers", "1"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen)
    while not list(out.parent.glob(f".slarm-work-{out.name}-*/{marker}")):
        assert proc.poll() is None, f"the run ended before {marker} appeared"
        time.sleep(0.002)
    return proc


@pytest.mark.parametrize("stage, marker", [  # a file that appears in the work folder at that stage of the run
    ("encoding", "encoded/episode-0/wrist/video.mp4"),  # workers encoding, LeRobot being imported
    ("writing", "new/meta/info.json"),  # LeRobot's writer adding the new episodes
    ("verifying", "dataset/meta/slarm.json"),  # merged with the old dataset, being reread
], ids=["encoding", "writing", "verifying"])
def test_killed_conversion_leaves_previous_dataset_and_rerun_completes(recorded, raw, tmp_path, stage, marker):
    out = one_episode_dataset(raw, tmp_path)
    before = tree_digest(out)

    proc = start_until(marker, raw, out)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "no orphaned worker stays"
    assert workers or stage == "verifying", "workers were running when the run was killed"
    assert tree_digest(out) == before, "the dataset is exactly as before the killed run"
    assert load(out).num_episodes == 1

    r = convert(raw, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "done: 1 episode added, 1 already there" in r.stdout
    assert load(out).num_episodes == 2
    assert not list(tmp_path.glob(".slarm-work-*")), "work folders of killed runs are cleaned up"


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_ctrl_c_leaves_the_dataset_as_it_was_and_no_work_folder(raw, tmp_path, stop):
    """Ctrl-C in the terminal (SIGINT to slarm-convert and its workers), or SIGTERM from a job
    scheduler, while the workers encode: one line saying what became of the dataset, exit 130,
    the dataset exactly as before, no work folder or worker left; the same command then finishes."""
    out = one_episode_dataset(raw, tmp_path)
    before = tree_digest(out)

    proc = start_until("encoded/episode-0/wrist/video.mp4", raw, out, text=True, start_new_session=True)
    workers = children(proc.pid)
    assert workers, "workers were running when the run was stopped"
    os.killpg(proc.pid, getattr(signal, stop))
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    assert output.strip().splitlines()[-1] == (f"error: interrupted: {out} is unchanged; run the same command "
                                               "again to add the new episodes")
    assert "Traceback" not in output
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "no worker stays"
    assert not list(tmp_path.glob(".slarm-work-*")), "no work folder is left"
    assert tree_digest(out) == before, "the dataset is exactly as before"

    r = convert(raw, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "done: 1 episode added, 1 already there" in r.stdout
    assert load(out).num_episodes == 2


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_waits_for_a_step_that_must_not_be_cut_in_two(stop):
    """The exchange of the old dataset for the new one is never cut in two by Ctrl-C: the
    interrupt comes right after it, so slarm-convert can say which dataset is in place. The
    process has other threads (LeRobot's writer does), which the signal may reach instead."""
    r = subprocess.run([sys.executable, "-c", f"""if True:
        import os, signal, threading, time
        from slarm.common import stop_on_signals, stops_held
        stop_on_signals()
        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
        try:
            with stops_held():
                os.kill(os.getpid(), signal.{stop})
                time.sleep(0.2)
                print("step done")
            print("not reached")
        except KeyboardInterrupt:
            print("interrupted after it")
        """], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.stdout.split("\n")[:2] == ["step done", "interrupted after it"], r.stdout + r.stderr


def test_a_ctrl_c_that_a_library_swallowed_still_stops_the_run():
    """Raised inside some C extensions' Python calls (pandas' modules as LeRobot imports them),
    the KeyboardInterrupt of a Ctrl-C can be lost; seen once in 20 SIGTERMs while LeRobot was
    imported, and the run then finished as if nothing had happened. slarm-convert checks again
    as each episode is taken from the workers."""
    r = subprocess.run([sys.executable, "-c", """if True:
        import os, signal
        from slarm.common import raise_if_stopped, stop_on_signals
        stop_on_signals()
        raise_if_stopped()
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            print("swallowed")
        try:
            raise_if_stopped()
            print("not stopped")
        except KeyboardInterrupt:
            print("stopped")
        """], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.stdout.split() == ["swallowed", "stopped"], r.stdout + r.stderr


def test_workers_default_to_the_cores_it_may_use(raw, tmp_path):
    """A batch job given one core of a bigger machine (taskset here; a Slurm job's cores, a
    container's cpuset alike) runs one worker, not one per machine core crowding into it."""
    cores = os.sched_getaffinity(0)
    if len(cores) < 2:
        pytest.skip("needs 2 cores to tell one worker from one per core")
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "slarm.convert.cli", str(raw), str(out)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: os.sched_setaffinity(0, {min(cores)}))
    while not list(tmp_path.glob(".slarm-work-ds-*/encoded/episode-0/wrist/video.mp4")):
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.002)
    workers = children(proc.pid)
    output = proc.communicate(timeout=120)[0]
    assert len(workers) == 1, f"{len(workers)} workers on one core"
    assert proc.returncode == 0 and "done: 2 episodes added" in output, output


def test_workers_run_below_the_process_that_writes_the_dataset(raw, tmp_path):
    """Every episode waits for slarm-convert's own process (it imports LeRobot while the first
    episodes are prepared, then writes each one): every thread of every worker, the video
    encoder's included, runs at a lower priority than it, which keeps its own."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    proc = subprocess.Popen([sys.executable, "-m", "slarm.convert.cli", str(raw), str(tmp_path / "ds"), "--workers", "2"],
                            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    seen: dict[tuple[int, int], int] = {}  # (worker, thread) -> its nice value
    main: set[int] = set()
    while proc.poll() is None:
        main |= set(thread_nice(proc.pid).values())
        for worker in children(proc.pid):
            seen |= {(worker, tid): nice for tid, nice in thread_nice(worker).items()}
        time.sleep(0.005)
    output = proc.communicate()[0]
    assert proc.returncode == 0 and "done: 2 episodes added" in output, output
    threads = Counter(worker for worker, _ in seen)
    assert len(threads) == 2 and max(threads.values()) >= 10, f"workers and their threads seen: {threads}"
    assert set(seen.values()) == {min(19, own + WORKER_NICENESS)}, seen
    assert main == {own}


def thread_nice(pid: int) -> dict[int, int]:
    """The nice value of each thread of process `pid` (Linux /proc; {} once it has ended)."""
    nice = {int(stat.parent.name): stat_field(stat, 19) for stat in Path(f"/proc/{pid}/task").glob("*/stat")}
    return {tid: n for tid, n in nice.items() if n is not None}


@pytest.mark.parametrize("limited, unlimited", [
    ({"cpu.max": "100000 100000"}, {"cpu.max": "max 100000"}),  # cgroup v2: docker --cpus 1
    ({"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"},  # cgroup v1: --cpus 0.5
     {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}),
], ids=["v2", "v1"])
def test_workers_stay_within_a_containers_cpu_quota(tmp_path, limited, unlimited):
    """The CPU quota of a container, as it sees its cgroup files, caps the default worker count."""
    every = len(os.sched_getaffinity(0))
    if every < 2:
        pytest.skip("needs 2 cores to tell")

    def cgroup(files: dict[str, str]) -> Path:
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(exist_ok=True)
            (tmp_path / name).write_text(text + "\n")
        return tmp_path

    assert usable_cores(tmp_path) == every, "no cgroup files: every core it may run on"
    assert usable_cores(cgroup(limited)) == 1
    assert usable_cores(cgroup(unlimited)) == every


def test_a_second_conversion_into_the_same_dataset_is_refused_while_the_first_runs(raw, tmp_path):
    """Two terminals (or two batch jobs) appending different raw folders to one dataset: each would
    put back the dataset as it found it plus its own episodes, the later one without the other's.
    The second is refused at once, with what to do; the first completes."""
    other = tmp_path / "other" / "so101_pickplace_v1"
    other.mkdir(parents=True)
    shutil.copy(sorted(raw.glob("*.h5"))[0], other)
    out = tmp_path / "ds"
    first = start_until("encoded/episode-0/wrist/video.mp4", raw, out, text=True)
    r = convert(other, out)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() == (f"error: another slarm-convert is writing into {out}; wait for it to end, then run "
                                "this command again (it adds what is still missing)")
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 0 and "done: 2 episodes added" in output, output
    assert load(out).num_episodes == 2
    assert convert(other, out).returncode == 0, "once the first has ended, the same command runs"


def test_a_full_disk_leaves_the_dataset_as_it_was(raw, tmp_path):
    """Appending with no room left on the dataset's disk (a small tmpfs, filled up): one message
    that says what to do, exit 1, the dataset exactly as before, no work folder left behind."""
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(sorted(raw.glob("*.h5"))[0], first)
    disk, before, after = tmp_path / "disk", tmp_path / "before", tmp_path / "after"
    ds = disk / "ds"
    r = on_small_disk(disk, "4m", f"""
        {sys.executable} -m slarm.convert.cli {first} {ds} > /dev/null || exit 98
        cp -a {ds} {before}
        dd if=/dev/zero of={disk}/filler bs=64k 2> /dev/null
        {sys.executable} -m slarm.convert.cli {raw} {ds}; rc=$?
        rm {disk}/filler; ls -A {disk} > {tmp_path}/left.txt; cp -a {ds} {after}
        exit $rc""")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"error: conversion failed, {ds} is unchanged: " in r.stderr
    assert f"The disk that holds {disk} ({disk}) is full" in r.stderr and "run the same command again" in r.stderr, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert tree_digest(after) == tree_digest(before), "the dataset is exactly as before"
    assert (tmp_path / "left.txt").read_text().split() == [".ds.slarm-convert-lock", "ds"], "no work folder is left"
    assert load(after).num_episodes == 1


def without_file_locks(error: str, module: str, *args) -> subprocess.CompletedProcess:
    """Run `python -m module args` as on a network disk whose file locks fail with `error`
    (tests/no_file_locks.py: every flock() of the process fails)."""
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "no_file_locks.py"), error, sys.executable, "-m", module,
                        *map(str, args)], capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL, timeout=300)
    if r.returncode == 99:
        pytest.skip(r.stderr.strip())
    return r


@pytest.mark.e2e
def test_raw_and_dataset_folders_on_network_disks_without_file_locks(tmp_path):
    """Raw files on NFS without its lock service (flock: ENOLCK), as on many lab and cluster
    machines: HDF5's own file lock failed, so capture refused the folder and every recorded file
    looked unreadable. Recording, inspecting and converting work there; the guards against a
    second run are the only thing such a disk cannot give. The conversion runs with ENOSYS
    (Lustre without flock), since the failure is simulated for the whole process and the
    datasets library, under LeRobot, locks its cache in the home folder: with ENOSYS it falls
    back to a lock of its own, with ENOLCK it gives up (a home folder on such a disk would need
    HF_HOME elsewhere)."""
    cfg = write_config(tmp_path)
    r = without_file_locks("ENOLCK", "slarm.capture.cli", "--config", cfg, "--sim", "--episodes", "1", "--episode-time",
                           "1", "--preview", "off")
    assert r.returncode == 0 and "done: 1 episode saved" in r.stdout, r.stdout + r.stderr
    raw = episodes_dir(cfg)
    r = without_file_locks("ENOLCK", "slarm.inspect.cli", raw, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["unreadable"] == [] and [e["frames"] for e in report["episodes"]] == [30], r.stdout
    out = tmp_path / "ds"
    r = without_file_locks("ENOSYS", "slarm.convert.cli", raw, out)
    assert r.returncode == 0 and "done: 1 episode added" in r.stdout, r.stdout + r.stderr
    assert load(out).num_episodes == 1


def test_truncated_and_unfinished_files_are_reported_not_fatal(raw, tmp_path):
    files = sorted(raw.glob("*.h5"))
    bad = raw / "episode_000007.h5"
    bad.write_bytes(files[0].read_bytes()[:100_000])
    (raw / "episode_000008.h5.partial").write_bytes(b"")
    r = convert(raw, tmp_path / "ds")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "episode_000007.h5: " in r.stderr and "skipped" in r.stderr
    assert "episode_000008.h5.partial: unfinished episode" in r.stderr
    assert "done: 2 episodes added" in r.stdout


def damage_frames(path: Path, frames, keep: float = 0.5) -> None:
    """Camera frames cut short (to `keep` of their bytes), as a USB camera on a busy bus sends one
    now and then (and the driver may hand it over)."""
    import h5py

    with h5py.File(path, "r+") as f:
        stored = f["cameras/wrist/frames"]
        for i in frames:
            stored[i] = stored[i][: int(len(stored[i]) * keep)]


def test_broken_frames_are_replaced_and_an_episode_with_many_is_skipped(raw, tmp_path):
    """A frame the camera broke is replaced by a neighbouring one (the one before it; at the start,
    the one after), and the run names it: the demonstration is kept. An episode with more than
    10 % of a camera's frames broken is a damaged file: it is named and skipped."""
    files = sorted(raw.glob("*.h5"))
    damage_frames(files[0], [0, 20])
    damage_frames(files[1], range(10, 14))  # 5 of its 45 frames, one of them with no bytes at all
    damage_frames(files[1], [14], keep=0)
    r = convert(raw, tmp_path / "ds", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (f"warning: {files[0]}: camera wrist: frames 0, 20 could not be decoded (a broken JPEG from the camera); "
            "each was replaced by a neighbouring frame") in r.stderr
    assert (f"warning: {files[1]}: camera wrist: frames 10, 11, 12, 13, 14 cannot be decoded (over 10% of its 45 "
            "frames); skipped") in r.stderr
    assert "done: 1 episode added, 0 already there, 1 damaged skipped; 45 frames (" in r.stdout
    assert ", 2 undecodable replaced)" in r.stdout
    ds = load(tmp_path / "ds")
    assert ds.num_episodes == 1
    with open_episode(files[0]) as ep:
        rows = list(grid_rows(ep.tick_index)[0])

    def shown(row: int) -> int:  # the frame number the dataset's image of raw frame `row` shows
        image = ds[rows.index(row)]["observation.images.wrist"].numpy().transpose(1, 2, 0) * 255
        return barcode_value(image.round().astype(np.uint8))

    assert shown(20) == shown(max(r for r in rows if r < 20)), "the frame before it"
    assert shown(0) == shown(min(r for r in rows if r > 0)), "at the start: the frame after it"

    before = tree_digest(tmp_path / "ds")  # again: the one new episode is the damaged one
    r = convert(raw, tmp_path / "ds", timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{files[1]}: camera wrist: frames 10, 11" in r.stderr and "no episode could be converted" in r.stderr
    assert tree_digest(tmp_path / "ds") == before


def test_bad_arguments_get_one_clear_message(raw, tmp_path):
    r = convert(raw, tmp_path / "ds", "--codec", "h264_nvenc")
    assert r.returncode == 2 and "--codec h264_nvenc:" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ds").exists()
    r = convert(raw, tmp_path / "ds", "--size", "big")
    assert r.returncode == 2 and "expected WIDTHxHEIGHT" in r.stderr
    r = convert(raw, tmp_path / "ds", "--size", "255x255", "--codec", "h264")  # libx264 in yuv420p: even sides
    assert r.returncode == 2 and "cannot be opened for 255x255 images" in r.stderr and "--size" in r.stderr
    assert not (tmp_path / "ds").exists()
    r = convert(raw, tmp_path / "ds", "--task", " ")  # e.g. --task "$TASK" with TASK unset
    assert r.returncode == 2 and "'--task': empty" in r.stderr
    two_sizes = write_config(tmp_path, cameras=[{"name": "wrist", "target_width": 224, "target_height": 224},
                                                {"name": "top", "target_width": 256, "target_height": 256}])
    r = convert(raw, tmp_path / "ds", "--config", two_sizes)
    assert r.returncode == 2 and "target sizes differ (wrist 224x224, top 256x256)" in r.stderr
    assert not (tmp_path / "ds").exists()
    r = convert(tmp_path / "nowhere", tmp_path / "ds")
    assert r.returncode == 2 and "no such folder of raw episodes" in r.stderr
    r = convert(raw.parent, tmp_path / "ds")  # raw_dir, not raw_dir/dataset_name
    assert r.returncode == 2 and f"{raw.parent} holds no episodes itself, but its folder {raw} does: give that one" \
        in r.stderr
    (tmp_path / "empty").mkdir()
    r = convert(raw, tmp_path / "empty", tmp_path / "ds")  # a second raw folder with nothing in it
    assert r.returncode == 0 and f"warning: no raw episodes in {tmp_path / 'empty'} " in r.stderr
    assert "done: 2 episodes added" in r.stdout
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    r = convert(raw, tmp_path / "notes")
    assert r.returncode == 2 and "is not a LeRobot dataset" in r.stderr
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    r = convert(raw, tmp_path / "notes" / "todo.txt")
    assert r.returncode == 2 and "todo.txt is a file, not a dataset folder" in r.stderr
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"], "nothing left beside it"
    assert not list(tmp_path.glob(".notes*")), "nothing left beside it"
    r = convert(raw, tmp_path / "notes" / "todo.txt" / "ds")
    assert r.returncode == 2 and f"{tmp_path / 'notes' / 'todo.txt'} is a file, not a folder" in r.stderr, r.stdout
    (tmp_path / "mine").mkdir()
    r = convert(raw, ".", cwd=tmp_path / "mine")  # made the new dataset's folder, went into it
    assert r.returncode == 2 and ". is the folder this command runs in" in r.stderr, r.stdout + r.stderr
    assert "Run it from another folder" in r.stderr and "Traceback" not in r.stderr
    assert not any((tmp_path / "mine").iterdir())


def test_a_dataset_folder_that_is_a_symlink_stays_one(raw, tmp_path):
    """datasets/x -> /mnt/big/x (a dataset kept on another disk): the episodes are appended where
    the dataset is, and the link stays a link."""
    real = one_episode_dataset(raw, tmp_path)
    link = tmp_path / "link"
    link.symlink_to(real)
    r = convert(raw, link)
    assert r.returncode == 0, r.stdout + r.stderr
    assert link.is_symlink() and link.resolve() == real
    assert load(real).num_episodes == 2
