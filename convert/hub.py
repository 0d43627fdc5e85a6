"""Push a finished dataset to the Hugging Face Hub with LeRobot's own push_to_hub (v3.0 tag)."""

from __future__ import annotations

from pathlib import Path


def push(root: Path, repo_id: str, private: bool) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(repo_id, root=root, video_backend="pyav")
    ds.push_to_hub(private=private, tags=["slarm", "LeRobot"])
