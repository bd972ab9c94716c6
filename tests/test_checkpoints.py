"""Checkpoint records, devices, integer bounds and the conversion cache, as hostile or careless input meets them
(issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from blockrank_rerank import BlockRank, BlockRankConfig
from blockrank_rerank.config import MAX_BLOCK_TOKENS, MAX_POSITION
from blockrank_rerank.loading import (
    TRAINED_ADAPTER_DIR,
    checkpoint_record,
    embedded_default_dir,
    load_model_and_tokenizer,
    model_settings,
    require_available,
    staging_prefix,
)

from conftest import save_tiny_model

SETTINGS = {"scoring_layer": 2, "num_signal_tokens": 2, "query_position_offset": 16384, "max_block_tokens": 160}


def write_record(folder: Path, record: object) -> Path:
    """`record` as `folder/blockrank.json` (a str is written verbatim); returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "blockrank.json"
    path.write_text(record if isinstance(record, str) else json.dumps(record), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random Llama with the embedded tokenizer, saved as a local model."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_base") / "base")


def save_adapter(base: Path, folder: Path) -> dict[str, torch.Tensor]:
    """A non-trivial LoRA adapter over `base` saved in `folder`; returns the weights of `base` with it merged once."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    model.save_pretrained(folder)
    return {name: value.clone() for name, value in model.merge_and_unload().state_dict().items()}


# Item 7 (and 4): blockrank.json is validated fully, every error names the file


def test_null_base_model_is_refused_instead_of_loading_the_shipped_model(tmp_path):
    path = write_record(
        tmp_path / "ckpt",
        {"format": "blockrank-checkpoint/1", "kind": "lora", "base_model": None, "settings": SETTINGS},
    )
    with pytest.raises(ValueError, match="needs 'base_model'") as caught:
        load_model_and_tokenizer(str(path.parent), torch.float32, "cpu")
    assert str(path) in str(caught.value)
    with pytest.raises(ValueError, match="needs 'base_model'"):
        BlockRank.from_pretrained(str(path.parent))


BAD_RECORDS = {
    "not an object": ["kind", "lora"],
    "unknown format": {"format": "blockrank-checkpoint/99", "kind": "full"},
    "unknown kind": {"kind": "adapter", "base_model": "x"},
    "lora without base_model": {"kind": "lora"},
    "empty base_model": {"kind": "lora", "base_model": "  "},
    "numeric base_model": {"kind": "lora", "base_model": 5},
    "base_model without kind": {"base_model": "some/model"},
    "full with base_model": {"kind": "full", "base_model": "some/model"},
    "unknown embedded base": {"kind": "lora", "base_model": "embedded:nope"},
    "settings not an object": {"kind": "full", "settings": [1, 2]},
    "settings records a device": {"kind": "full", "settings": {**SETTINGS, "device": "cuda:7"}},
    "settings records a dtype": {"kind": "full", "settings": {"dtype": "float16"}},
    "scoring_layer a string": {"kind": "full", "settings": {"scoring_layer": "3"}},
    "scoring_layer a bool": {"kind": "full", "settings": {"scoring_layer": True}},
    "negative offset": {"kind": "full", "settings": {"query_position_offset": -1}},
    "overflowing offset": {"kind": "full", "settings": {"query_position_offset": 2**63 - 1}},
    "tiny block cap": {"kind": "full", "settings": {"max_block_tokens": 2}},
    "training not an object": {"kind": "full", "training": "yes"},
    "legacy block cap a string": {"kind": "full", "training": {"max_block_tokens": "160"}},
    "invalid JSON": "{kind: lora",
    "deeply nested JSON": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("label", list(BAD_RECORDS))
def test_bad_records_are_value_errors_naming_the_file(tmp_path, label):
    path = write_record(tmp_path / "ckpt", BAD_RECORDS[label])
    for call in (
        lambda: model_settings(str(path.parent)),
        lambda: load_model_and_tokenizer(str(path.parent), torch.float32, "cpu"),
    ):
        with pytest.raises(ValueError) as caught:
            call()
        assert str(path) in str(caught.value), caught.value


def test_non_utf8_record_is_a_value_error_naming_the_file(tmp_path):
    path = write_record(tmp_path / "ckpt", "")
    path.write_bytes(b'{"kind": "\xff"}')
    with pytest.raises(ValueError, match="UTF-8") as caught:
        checkpoint_record(str(path.parent))
    assert str(path) in str(caught.value)


def test_shipped_trainer_and_older_records_keep_loading(tmp_path):
    shipped = checkpoint_record(str(TRAINED_ADAPTER_DIR))
    assert shipped["kind"] == "lora" and shipped["base_model"] == "embedded:smollm2-135m-instruct"
    assert (
        model_settings(str(TRAINED_ADAPTER_DIR))
        == json.loads((TRAINED_ADAPTER_DIR / "blockrank.json").read_text())["settings"]
    )
    trainer_full = {
        "format": "blockrank-checkpoint/1",
        "kind": "full",
        "base_model": None,
        "settings": {**SETTINGS, "scoring_layer": None},
        "training": {"device": "cuda", "max_block_tokens": 160},
        "note": "unknown top-level keys are kept",
    }
    write_record(tmp_path / "full", trainer_full)
    assert model_settings(str(tmp_path / "full")) == {**SETTINGS, "scoring_layer": None}
    write_record(tmp_path / "old", {"settings": {"scoring_layer": 3}, "training": {"max_block_tokens": 160}})
    assert model_settings(str(tmp_path / "old")) == {"scoring_layer": 3, "max_block_tokens": 160}


def test_relative_base_model_is_resolved_against_the_checkpoint_and_merged_once(tmp_path, tiny_base, monkeypatch):
    adapter = tmp_path / "runs" / "adapter"
    expected = save_adapter(tiny_base, adapter)
    (tmp_path / "runs" / "base").symlink_to(tiny_base, target_is_directory=True)
    write_record(
        adapter, {"format": "blockrank-checkpoint/1", "kind": "lora", "base_model": "../base", "settings": SETTINGS}
    )
    monkeypatch.chdir(tmp_path)  # "../base" from here is not the base; from the checkpoint's directory it is
    assert checkpoint_record(str(adapter))["base_model"] == str(tiny_base.resolve())
    model, _, _ = load_model_and_tokenizer(str(adapter), torch.float32, "cpu")
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.allclose(loaded[name], value, atol=1e-6), name


def test_base_model_naming_the_checkpoint_itself_is_refused(tmp_path):
    for base in (".", str(tmp_path / "ckpt"), "../ckpt"):
        path = write_record(tmp_path / "ckpt", {"kind": "lora", "base_model": base})
        with pytest.raises(ValueError, match="this checkpoint itself") as caught:
            load_model_and_tokenizer(str(path.parent), torch.float32, "cpu")
        assert str(path) in str(caught.value)


@pytest.mark.parametrize("relative", [False, True])
def test_a_cycle_of_lora_checkpoints_is_refused(tmp_path, relative):
    first = write_record(tmp_path / "a", {"kind": "lora", "base_model": "../b" if relative else str(tmp_path / "b")})
    write_record(tmp_path / "b", {"kind": "lora", "base_model": "../a" if relative else str(tmp_path / "a")})
    with pytest.raises(ValueError, match="leads back") as caught:
        load_model_and_tokenizer(str(first.parent), torch.float32, "cpu")
    assert str(tmp_path / "b" / "blockrank.json") in str(caught.value)


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_uncached_hub_model_fails_fast_when_offline(tmp_path, monkeypatch, variable):
    missing = "blockrank-tests/not-a-cached-model"
    monkeypatch.setenv(variable, "1")
    path = write_record(tmp_path / "ckpt", {"kind": "lora", "base_model": missing})
    start = time.perf_counter()
    with pytest.raises(OSError, match="HF_HUB_OFFLINE") as caught:
        load_model_and_tokenizer(str(path.parent), torch.float32, "cpu")
    assert str(path) in str(caught.value) and missing in str(caught.value)
    with pytest.raises(OSError, match="nor in the Hugging Face cache"):
        load_model_and_tokenizer(missing, torch.float32, "cpu")
    assert time.perf_counter() - start < 5


class HubStandIn(http.server.BaseHTTPRequestHandler):
    """Answers `GET /api/models/<id>` as the Hugging Face Hub does: 200 with the model's info for KNOWN, else 404
    with the hub's `X-Error-Code: RepoNotFound` header (the real hub is out of reach here)."""

    KNOWN = "quicktensor/blockrank-msmarco-mistral-7b"

    def do_GET(self) -> None:
        found = self.path.split("?")[0].rstrip("/").endswith(self.KNOWN)
        body = json.dumps({"id": self.KNOWN} if found else {"error": "Repository not found"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        if not found:
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def online_hub(monkeypatch):
    """Online mode with the hub endpoint pointed at a `HubStandIn` on a loopback port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield
    server.shutdown()


def test_an_online_hub_id_that_does_not_exist_fails_before_loading(online_hub):
    require_available(HubStandIn.KNOWN)  # exists: left to the load
    with pytest.raises(OSError, match="Hub has no model by that id"):
        require_available("blockrank-tests/no-such-model", "model=")
    with pytest.raises(OSError, match="Hub has no model by that id"):
        load_model_and_tokenizer("blockrank-tests/no-such-model", torch.float32, "cpu")


def test_an_adapter_with_an_online_hub_id_that_does_not_exist_fails_at_construction(online_hub):
    pytest.importorskip("langchain_core")
    from blockrank_rerank.integrations.langchain import BlockRankRerank

    with pytest.raises(OSError, match="model=.*Hub has no model by that id"):
        BlockRankRerank(model="blockrank-tests/no-such-model")


def test_an_unreachable_hub_leaves_the_verdict_to_the_load(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with socket.socket() as closed:  # a port nothing listens on: connection refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.perf_counter()
    require_available("blockrank-tests/unreachable-model")
    assert time.perf_counter() - start < 5


# Items 4 and 9: devices


@pytest.mark.parametrize("device", ["foo", "", "cuda:-1", "CUDA", "meta", "xla", "vulkan", 0, None])
def test_malformed_unsupported_and_meta_devices_are_value_errors(device):
    with pytest.raises(ValueError, match="device"):
        BlockRankConfig(device=device)


def test_meta_device_names_the_reason():
    with pytest.raises(ValueError, match="cannot compute scores on meta"):
        BlockRankConfig(device="meta")


def test_absent_accelerators_are_value_errors_at_config_and_load_time(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", "mps"):
        with pytest.raises(ValueError, match="no (cuda|mps) device is available"):
            BlockRankConfig(device=device)
    with pytest.raises(ValueError, match="no cuda device"):
        load_model_and_tokenizer("embedded:smollm2-135m-instruct", torch.float32, "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert BlockRankConfig(device="cuda:1", dtype="float32").device == "cuda:1"  # no real GPU to ask about bf16
    with pytest.raises(ValueError, match="has 2 cuda device"):
        BlockRankConfig(device="cuda:3", dtype="float32")


def test_a_checkpoint_cannot_force_an_absent_device(tmp_path):
    path = write_record(tmp_path / "ckpt", {"kind": "full", "settings": {"device": "cuda:7"}})
    with pytest.raises(ValueError, match="facts about the model") as caught:
        BlockRank.from_pretrained(str(path.parent))
    assert str(path) in str(caught.value)


# Item 9: integer fields are bounded where torch would overflow, and bools are not ints


@pytest.mark.parametrize(
    "field", ["scoring_layer", "num_signal_tokens", "query_position_offset", "max_block_tokens", "batch_tokens"]
)
def test_int_fields_refuse_bools_and_values_that_overflow(field):
    for value in (True, 2**63 - 1, 2**70, -1):
        with pytest.raises(ValueError, match=field):
            BlockRankConfig(**{field: value})


def test_offset_bound_is_explained_and_the_largest_allowed_values_score(default_ranker):
    with pytest.raises(ValueError, match="offset \\+ max_block_tokens"):
        BlockRankConfig(query_position_offset=9223372036854775807)
    docs = ["Cats are small felines.", "The stock market fell."]
    for config in (
        BlockRankConfig(query_position_offset=MAX_POSITION - 384),
        BlockRankConfig(max_block_tokens=MAX_BLOCK_TOKENS, batch_tokens=MAX_POSITION),
    ):
        for mode in ("blockrank", "icr"):
            scores = BlockRank(
                default_ranker.engine.model, default_ranker.engine.tokenizer, config.replace(scoring_mode=mode)
            ).score("what is a cat", docs)
            assert len(scores) == 2 and all(s == s for s in scores)


# Item 9: a conversion killed half-way leaves no folder behind for good


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_conversion_folders_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOCKRANK_CACHE_DIR", str(tmp_path))
    target = tmp_path / "smollm2-135m-instruct"
    target.mkdir()
    (target / "config.json").write_text("{}")
    live_prefix = staging_prefix()
    dead_prefix = live_prefix.replace(f"-{os.getpid()}@", f"-{dead_pid()}@")
    folders = {
        "dead": tmp_path / f"{dead_prefix}abc_12",
        "live": tmp_path / f"{live_prefix}xyz_34",
        "other host": tmp_path / f".converting-{dead_pid()}@another.host-q1w2",
        "old style, fresh": tmp_path / ".converting-k3j4h5",
        "old style, stale": tmp_path / ".converting-a1b2c3",
    }
    for folder in folders.values():
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * 1024)
    two_hours_ago = time.time() - 7200
    os.utime(folders["old style, stale"], (two_hours_ago, two_hours_ago))
    assert embedded_default_dir() == target
    gone = {label for label, folder in folders.items() if not folder.exists()}
    assert gone == {"dead", "old style, stale"}
