"""Push a finished dataset to the Hugging Face Hub.

v3.0: LeRobot's own push_to_hub (which tags the repository v3.0). v2.1: the folder is uploaded
as a dataset repository and tagged "v2.1", the revision v2.1 readers (OpenPI's LeRobot) ask for.
"""

from __future__ import annotations

import os
import re
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


_SECRETS = (
    re.compile(r"(authorization['\"]?\s*[:=]\s*['\"]?)(bearer\s+)?[^\s'\",}]+", re.IGNORECASE),
    re.compile(r"((?:token|access_token|api_key|password)['\"]?\s*[:=]\s*['\"]?)[^\s'\",}&]+", re.IGNORECASE),
    re.compile(r"()\bhf_[A-Za-z0-9]{8,}"),
)


def redact(text: str) -> str:
    """`text` (an error from the Hub's client, which can echo a request's headers) without any
    token: Authorization headers, token=... values, hf_... tokens, and the token this machine
    is logged in with, wherever it appears."""
    for token in _known_tokens():
        text = text.replace(token, "<redacted>")
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + "<redacted>", text)
    return text


def _known_tokens() -> list[str]:
    tokens = [os.environ.get(k, "") for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")]
    try:
        from huggingface_hub import get_token

        tokens.append(get_token() or "")
    except Exception:  # no token stored, an unreadable token file: nothing more to hide
        pass
    return [t for t in tokens if len(t) >= 8]
