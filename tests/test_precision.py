"""device="auto" and dtype="auto" (issue 18): what they resolve to, and the bfloat16-mixed path's scores."""

from __future__ import annotations

import pytest
import torch

from blockrank_rerank import BlockRank, BlockRankConfig
from blockrank_rerank import config as config_module
from blockrank_rerank.config import cpu_bf16_flags  # the real one, before conftest patches it per test

from blockrank_rerank.layout import build_layout

from conftest import random_prompt, save_tiny_model, tiny_model


def test_auto_device_takes_cuda_then_mps_then_cpu(monkeypatch):
    available = {"cpu": 1, "cuda": 0, "mps": 0, "xpu": 0}
    monkeypatch.setattr(config_module, "device_count", lambda kind: available[kind])
    assert config_module.auto_device() == "cpu"
    available["mps"] = 1
    assert config_module.auto_device() == "mps"
    available["cuda"] = 2
    assert config_module.auto_device() == "cuda"


def test_default_config_states_the_resolved_device_and_dtype(monkeypatch):
    config = BlockRankConfig()
    assert config.device == config_module.auto_device() and config.device != "auto"
    assert config.dtype == config_module.auto_dtype(torch.device(config.device)) and config.dtype != "auto"
    assert BlockRankConfig(device="cpu", dtype="float32").autocast_dtype is None


@pytest.mark.parametrize(
    "flags, expected",
    [(("amx_bf16", "avx512_bf16"), "bfloat16-mixed"), (("avx512_bf16",), "bfloat16-mixed"), ((), "float32")],
)
def test_auto_dtype_on_cpu_follows_bf16_instructions(monkeypatch, flags, expected):
    monkeypatch.setattr(config_module, "cpu_bf16_flags", lambda: flags)
    config = BlockRankConfig(device="cpu")
    assert config.dtype == expected
    assert config.torch_dtype == torch.float32  # weights stay fp32 either way
    assert config.autocast_dtype == (torch.bfloat16 if flags else None)


def test_cpu_bf16_flags_reads_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    )
    real_open = open
    monkeypatch.setattr(
        "builtins.open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k)
    )
    assert cpu_bf16_flags() == ("avx512_bf16",)
    cpuinfo.write_text("flags\t\t: fpu avx2\n")
    assert cpu_bf16_flags() == ()


def test_an_absent_device_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(config_module, "device_count", lambda kind: 1 if kind == "cpu" else 0)
    with pytest.raises(ValueError, match="no cuda device is available"):
        BlockRankConfig(device="cuda")


def test_unknown_dtype_lists_auto_and_the_mixed_dtype():
    with pytest.raises(ValueError, match="bfloat16-mixed"):
        BlockRankConfig(dtype="int8")


def test_mixed_precision_scores_are_close_to_fp32_and_fp32_where_they_are_read():
    model = tiny_model("llama", peaked=True, num_layers=3)
    exact = BlockRank(model, None, BlockRankConfig(device="cpu", dtype="float32"))
    mixed = BlockRank(model, None, BlockRankConfig(device="cpu", dtype="bfloat16-mixed"))
    prompt = build_layout(random_prompt(8, seed=3), query_position_offset=16384)  # the tiny model has no tokenizer
    with exact.engine.precision():
        reference = exact.engine.mode.score(exact.engine, prompt).shares
    with mixed.engine.precision():
        assert torch.is_autocast_enabled("cpu")
        approximate = mixed.engine.mode.score(mixed.engine, prompt).shares
    assert approximate.dtype == torch.float32 and next(model.parameters()).dtype == torch.float32
    assert float(approximate.sum()) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(approximate, reference, atol=2e-2) and not torch.equal(approximate, reference)


def test_chunked_scoring_runs_under_mixed_precision_and_stays_close_to_one_shot():
    """Chunks under autocast: the bucket attention comes back in bf16 while q stays fp32 (a dtype mismatch once)."""
    model = tiny_model("llama", peaked=True, num_layers=3)
    layout = build_layout(random_prompt(9, seed=4), query_position_offset=16384)
    settings = {"device": "cpu", "dtype": "bfloat16-mixed", "scoring_layer": 2}
    one_shot = BlockRank(model, None, BlockRankConfig(**settings)).engine
    chunked = BlockRank(model, None, BlockRankConfig(**settings, memory_budget_mb=1e-4)).engine
    assert chunked.execution_plan(layout).chunked
    expected, found = one_shot.read_layout(layout), chunked.read_layout(layout)
    torch.testing.assert_close(found.shares, expected.shares, atol=1e-3, rtol=0)
    torch.testing.assert_close(found.relevance_logits, expected.relevance_logits, atol=5e-3, rtol=0)


def test_loaded_mixed_precision_model_holds_bf16_matmul_weights_with_unchanged_scores(tmp_path):
    """from_pretrained casts the decoder's linear weights to bf16 once (autocast would at every use): same scores."""
    path = str(save_tiny_model(tmp_path / "tiny"))
    mixed = BlockRank.from_pretrained(path, device="cpu", dtype="bfloat16-mixed")
    layer = mixed.engine.model.model.layers[0]
    assert layer.mlp.up_proj.weight.dtype == torch.bfloat16 and layer.self_attn.q_proj.weight.dtype == torch.bfloat16
    assert layer.input_layernorm.weight.dtype == torch.float32  # norms and embeddings stay fp32
    assert mixed.engine.model.model.embed_tokens.weight.dtype == torch.float32
    exact = BlockRank.from_pretrained(path, device="cpu", dtype="float32")
    cast_per_use = BlockRank(exact.engine.model, exact.engine.tokenizer, exact.config.replace(dtype="bfloat16-mixed"))
    query, documents = "tides and the moon", ["The moon pulls the ocean.", "Stocks fell.", "Tides rise twice a day."]
    assert mixed.score(query, documents) == cast_per_use.score(query, documents)
    input_ids = torch.tensor([[1, 5, 9, 2]])  # (1, T)
    with torch.inference_mode(), mixed.engine.precision():  # the model run directly (generation): its precision
        generated = mixed.engine.model.generate(input_ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert generated.shape == (1, 7)
