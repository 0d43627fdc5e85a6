"""Pushing to the Hugging Face Hub: the upload's arguments, and every way it fails (the network is
the boundary: the Hub client is replaced, nothing else)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from conftest import invoke
from converting import convert, load
from slarm.convert.cli import main as convert_main


class FakeHub:
    """Stands in for huggingface_hub.HfApi at the network boundary; records the calls."""

    calls: list = []

    def __init__(self, *a, **k):
        pass

    def __getattr__(self, name):
        def call(*args, **kwargs):
            FakeHub.calls.append((name, args, kwargs))
        return call


def test_push_to_hub_calls_the_upload_with_its_arguments(raw, tmp_path, monkeypatch):
    import datasets
    import huggingface_hub
    import lerobot.datasets.lerobot_dataset as lrd

    FakeHub.calls = []
    monkeypatch.setattr(lrd, "HfApi", FakeHub)
    monkeypatch.setattr(huggingface_hub.DatasetCard, "push_to_hub", lambda self, **kw: FakeHub.calls.append(("card", (), kw)))
    out = tmp_path / "ds"
    cache_before = datasets.config.HF_DATASETS_CACHE
    result = invoke(convert_main,
                                [str(raw), str(out), "--workers", "1", "--push-to-hub", "me/pickplace", "--private"])
    assert result.exit_code == 0, result.output
    names = [c[0] for c in FakeHub.calls]
    create = next(c for c in FakeHub.calls if c[0] == "create_repo")
    assert create[2]["repo_id"] == "me/pickplace" and create[2]["private"] is True and create[2]["repo_type"] == "dataset"
    upload = next(c for c in FakeHub.calls if c[0] == "upload_folder")
    assert Path(upload[2]["folder_path"]) == out
    tag = next(c for c in FakeHub.calls if c[0] == "create_tag")
    assert tag[2]["tag"] == "v3.0"
    assert "card" in names
    assert "pushed to https://huggingface.co/datasets/me/pickplace" in result.output
    assert not list(tmp_path.glob(".slarm-work-*")), "the work folder of the push (the datasets cache) is gone"
    assert datasets.config.HF_DATASETS_CACHE == cache_before, "the datasets cache is put back for later runs"


def hub_error(status: int):
    """What huggingface_hub raises for an HTTP status, its text echoing the request's token."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx.Request("POST", "https://huggingface.co/api/repos/create",
                            headers={"authorization": "Bearer hf_SecretSecretSecret1"})
    return HfHubHTTPError(f"{status} Client Error for url {request.url} (authorization: Bearer hf_SecretSecretSecret1)",
                          response=httpx.Response(status, request=request))


def hub_failures():
    import httpx

    return [
        (httpx.ConnectError("[Errno -3] Temporary failure in name resolution"), 1,
         "push to the Hub failed: the Hub cannot be reached (no network, or huggingface.co's name does not resolve"),
        (hub_error(401), 1, "push to the Hub failed: the Hub does not accept this computer's login (401). Log in "
                            "with a write token (hf auth login), then retry."),
        (hub_error(403), 1, "push to the Hub failed: this login may not write to me/pickplace (403)."),
        (hub_error(429), 1, "push to the Hub failed: the Hub is limiting this account's requests (429). Wait a few "
                            "minutes, then retry."),
        (hub_error(503), 1, "push to the Hub failed: the Hub had a server error (503). Retry later"),
        (KeyboardInterrupt(), 130, "push to the Hub interrupted"),  # Ctrl-C
    ]


@pytest.mark.parametrize("case", range(6), ids=["offline", "login", "permission", "rate-limit", "server", "ctrl-c"])
def test_failed_push_says_what_happened_keeps_the_dataset_and_how_to_retry(raw, tmp_path, monkeypatch, case):
    import lerobot.datasets.lerobot_dataset as lrd

    failure, code, says = hub_failures()[case]

    class Failing(FakeHub):
        def create_repo(self, **kw):
            raise failure

    monkeypatch.setattr(lrd, "HfApi", Failing)
    out = tmp_path / "ds"
    args = [str(raw), str(out), "--workers", "1", "--push-to-hub", "me/pickplace", "--task", "pick it up"]
    monkeypatch.setattr(sys, "argv", ["slarm-convert", *args])  # as the user typed it
    result = invoke(convert_main, args)
    assert result.exit_code == code, result.output
    assert says in result.output
    assert "hf_Secret" not in result.output and "Bearer" not in result.output, "no token is printed"
    then = "run the same command again to push it" if code == 130 else "run the same command again to retry"
    assert f"The local dataset {out} is intact" in result.output and then in result.output
    retry = result.output.rstrip().splitlines()[-1]
    assert shlex.split(retry) == ["slarm-convert", *args], "the retry command can be pasted as it is"
    assert load(out).num_episodes == 2


def test_a_repository_id_the_hub_would_refuse_stops_before_any_work(raw, tmp_path):
    for repo_id in ("me/pick place", "pickplace"):
        r = convert(raw, tmp_path / "ds", "--push-to-hub", repo_id)
        assert r.returncode == 2 and f"--push-to-hub {repo_id!r}: not a Hub repository id" in r.stderr
        assert "user/name" in r.stderr and not (tmp_path / "ds").exists()
