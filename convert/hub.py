"""Push a finished dataset to the Hugging Face Hub.

v3.0: LeRobot's own push_to_hub (which tags the repository v3.0). v2.1: the folder is uploaded
as a dataset repository and tagged "v2.1", the revision v2.1 readers (OpenPI's LeRobot) ask for.
"""

from __future__ import annotations

from pathlib import Path


def push(root: Path, repo_id: str, private: bool, fmt: str = "v3.0") -> None:
    if fmt == "v2.1":
        _push_v21(root, repo_id, private)
        return
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(repo_id, root=root, video_backend="pyav")
    ds.push_to_hub(private=private, tags=["slarm", "LeRobot"])


def _push_v21(root: Path, repo_id: str, private: bool) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(root),
                      commit_message="slarm-convert: LeRobot v2.1 dataset")
    api.create_tag(repo_id=repo_id, tag="v2.1", repo_type="dataset", exist_ok=True)
