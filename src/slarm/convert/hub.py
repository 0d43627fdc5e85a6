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


def explain(e: BaseException, repo_id: str) -> str:
    """What went wrong with a push, in words, and what to do next: no network, the login, the
    permission, the Hub's rate limit, a server error, or (else) the error itself."""
    status, text = _status(e), redact(str(e))
    if _offline(e):
        return ("the Hub cannot be reached (no network, or huggingface.co's name does not resolve: "
                f"{_first_line(text)}). Check the connection (and HTTPS_PROXY behind a proxy), then retry")
    if status == 401 or isinstance(e, _errors("LocalTokenNotFoundError")):
        return "the Hub does not accept this computer's login (401). Log in with a write token (hf auth login), then retry"
    if status == 403:
        return (f"this login may not write to {repo_id} (403). Use a token with write access to that user or "
                "organization (a fine-grained token needs it listed), then retry")
    if status == 429:
        return "the Hub is limiting this account's requests (429). Wait a few minutes, then retry"
    if status is not None and status >= 500:
        return f"the Hub had a server error ({status}). Retry later (status: https://status.huggingface.co)"
    return f"{_first_line(text) or type(e).__name__}. Retry"


def _status(e: BaseException | None) -> int | None:
    while e is not None:
        response = getattr(e, "response", None)
        if getattr(response, "status_code", None) is not None:
            return int(response.status_code)
        e = e.__cause__ or e.__context__
    return None


def _offline(e: BaseException | None) -> bool:
    import socket

    import httpx

    while e is not None:
        if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout, socket.gaierror, ConnectionError)):
            return True
        if isinstance(e, _errors("OfflineModeIsEnabled")):
            return True
        e = e.__cause__ or e.__context__
    return False


def _errors(*names: str) -> tuple[type, ...]:
    from huggingface_hub import errors

    return tuple(getattr(errors, n) for n in names if hasattr(errors, n))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
