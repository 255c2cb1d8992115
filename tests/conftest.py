"""Fixtures shared by every test directory: a local server speaking the Hugging Face hub's HTTP
API (tests/hub_server.py) with a FineWeb-shaped dataset repository, and the environment that
points huggingface_hub and `datasets` at it."""

from __future__ import annotations

import pytest


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A running hub with one commit of a FineWeb-shaped repository (hub_server.HUB_FILES);
    huggingface_hub's and datasets' caches under tmp_path."""
    from hub_server import HubServer, fineweb_shaped_repo

    with HubServer(fineweb_shaped_repo()) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
        monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-home" / "datasets"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server
