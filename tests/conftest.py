"""Shared fixtures: tiny random decoders of each supported family, and the real tokenizers that ship offline."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from blockrank_rerank.tokenize import TokenizedPrompt

FAMILIES = ("mistral", "llama", "qwen2", "qwen3")
THREADS = 8  # concurrent callers in the concurrency tests
DATA_DIR = Path(os.environ.get("BLOCKRANK_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def float32_by_default_on_any_cpu():
    """dtype="auto" resolves in this process as on a CPU without bf16 instructions (float32), so that exactness
    tests hold on every machine kind; tests of the resolution itself patch `cpu_bf16_flags` again."""
    from blockrank_rerank import config

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "cpu_bf16_flags", lambda: ())
        yield


def tiny_model(family: str, peaked: bool = False, seed: int = 0, num_layers: int = 4):
    """A randomly initialised decoder with GQA (4 heads over 2 KV heads); `peaked` makes attention logits x16.

    Qwen3 normalises q and k per head (`q_norm`/`k_norm`, RMSNorm) after their projections, which cancels any
    scaling of `q_proj`/`k_proj`. Its norm weights are drawn per dimension from [0.1, 0.2] (a path that skips or
    misplaces them cannot match; the range puts its attention logits where the other families' are, std ~0.025),
    and `peaked` scales them instead.
    """
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    classes = {
        "mistral": (MistralConfig, MistralForCausalLM),
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    }
    config_class, model_class = classes[family]
    config = config_class(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=32768,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in model.model.layers:
            attn = layer.self_attn
            if hasattr(attn, "q_norm"):
                for norm in (attn.q_norm, attn.k_norm):
                    norm.weight.copy_(torch.empty(norm.weight.shape).uniform_(0.1, 0.2, generator=g))
            if peaked:
                scaled = (attn.q_norm, attn.k_norm) if hasattr(attn, "q_norm") else (attn.q_proj, attn.k_proj)
                for module in scaled:
                    module.weight.mul_(4.0)
    return model


def save_tiny_model(folder: Path) -> Path:
    """A random 3-layer Llama with the embedded tokenizer, saved so that any process can load it by path."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from blockrank_rerank.loading import embedded_default_dir

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_default_dir()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def random_prompt(num_documents: int, seed: int = 0, vocab: int = 97, max_len: int = 12) -> TokenizedPrompt:
    """Random token blocks with uneven document lengths (1..max_len tokens)."""
    g = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(3, vocab, (n,), generator=g).tolist()  # noqa: E731
    lengths = torch.randint(1, max_len + 1, (num_documents,), generator=g).tolist()
    return TokenizedPrompt(
        prefix=ids(7), documents=[ids(n) for n in lengths], query_block=ids(6), query="q", truncated_documents=()
    )


@pytest.fixture(scope="session")
def mistral_v3_tokenizer(tmp_path_factory):
    """Mistral-7B-Instruct-v0.3's sentencepiece tokenizer (from mistral-common) with a v3-style chat template."""
    mistral_common = pytest.importorskip("mistral_common")
    from transformers import LlamaTokenizer

    source = Path(mistral_common.__file__).parent / "data" / "mistral_instruct_tokenizer_240323.model.v3"
    folder = tmp_path_factory.mktemp("mistral_v3")
    shutil.copy(source, folder / "tokenizer.model")
    tokenizer = LlamaTokenizer.from_pretrained(folder)
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}[/INST]"
        "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    )
    return tokenizer


@pytest.fixture(scope="session")
def default_ranker():
    """The embedded default model (converted once per cache directory), shared by the whole run."""
    from blockrank_rerank import BlockRank

    return BlockRank.from_pretrained()


def require_data(*parts: str) -> Path:
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the shared data directory: {path} not found (set BLOCKRANK_DATA_DIR)")
    return path


async def gather_beside_ticker(calls) -> tuple[list, int, float]:
    """Run the coroutines concurrently beside a 5 ms ticker; the ticks show whether the event loop stayed free."""
    ticks, done = 0, asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    results = await asyncio.gather(*calls)
    elapsed = time.perf_counter() - start
    done.set()
    await task
    return results, ticks, elapsed


def assert_event_loop_was_free(ticks: int, elapsed: float) -> None:
    """A forward run on the event loop starves the 5 ms ticker for the whole call; in a worker thread it keeps
    ticking."""
    assert ticks >= max(3, int(elapsed / 0.005 * 0.2)), (ticks, elapsed)


def concurrent_requests(count: int = THREADS) -> list[tuple[str, list[str]]]:
    """`count` (query, documents) pairs from the demo corpus with 2 to 4 documents each, for concurrent callers."""
    from blockrank_rerank.evaluation.demo_corpus import DEMO_QUERIES

    return [(q["query"], q["documents"][: 2 + i % 3]) for i, q in enumerate(DEMO_QUERIES * count)][:count]


@pytest.fixture
def forward_watch(monkeypatch):
    """Counts model forwards running at the same moment on any ranker (the most seen is `watch["most"]`).

    Wraps `forward.run_layers`, the one loop over decoder layers, under every name the package imported it by.
    """
    import sys

    import blockrank_rerank.reranker  # noqa: F401  (loads the modules that call the forward)
    from blockrank_rerank import forward

    watch = {"now": 0, "most": 0}
    guard = threading.Lock()
    original = forward.run_layers

    def watched(*args, **kwargs):
        with guard:
            watch["now"] += 1
            watch["most"] = max(watch["most"], watch["now"])
        try:
            time.sleep(0.002)  # widen the window in which an unserialised second forward would overlap
            return original(*args, **kwargs)
        finally:
            with guard:
                watch["now"] -= 1

    callers = [
        module
        for name, module in list(sys.modules.items())
        if name.split(".")[0] == "blockrank_rerank" and getattr(module, "run_layers", None) is original
    ]
    assert callers, "no module of the package calls forward.run_layers: update forward_watch"
    for module in callers:
        monkeypatch.setattr(module, "run_layers", watched)
    return watch
