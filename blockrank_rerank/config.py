"""The one validated, frozen configuration object of a BlockRank reranker."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch

from .attention import ATTENTION_FUNCTIONS
from .modes import SCORING_MODES

ATTENTION_BACKENDS = ("auto", *ATTENTION_FUNCTIONS)  # "auto" picks the fastest usable one (attention.resolve_backend)
# dtype name -> dtype the weights load in; "bfloat16-mixed" keeps embeddings, residual stream, norms and the readout
# in fp32 and runs matmuls and attention in bf16 under autocast (from_pretrained then holds the decoder's linear
# weights in bf16: loading.hold_linear_weights_in); "auto" resolves by `auto_dtype`
DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "bfloat16-mixed": torch.float32,
}
AUTOCAST_DTYPES = {"bfloat16-mixed": torch.bfloat16}  # dtype name -> autocast compute dtype
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")  # device types a reranker can compute on
LONG_DOCUMENTS = ("truncate", "split")
SPLIT_SCORES = ("sum", "max")
AUTO_DEVICE_ORDER = ("cuda", "mps", "cpu")  # what device="auto" takes, first available
MAX_POSITION = 2**31 - 1  # largest position id: kernels and position tensors index with 32-bit integers
MAX_BLOCK_TOKENS = 2**24  # no model has a longer context; keeps every default position far below MAX_POSITION
# facts about a trained model, which a checkpoint's blockrank.json may state
MODEL_SETTINGS = (
    "scoring_layer",
    "num_signal_tokens",
    "query_position_offset",
    "max_block_tokens",
    "head_weights",
    "relevance_calibration",
)

# Per-checkpoint settings that are facts about how the checkpoint was trained.
KNOWN_CHECKPOINTS: dict[str, dict[str, Any]] = {
    "quicktensor/blockrank-msmarco-mistral-7b": {
        "scoring_layer": 20,
        "num_signal_tokens": 2,
        "query_position_offset": 16384,
        "max_block_tokens": 384,  # reference BEIR eval; 512 is its quick-start value (docs/design.md §8)
    },
}


def default_scoring_layer(num_layers: int) -> int:
    """L* for a model with `num_layers` decoder layers: 5/8 of the depth, as layer 20 of Mistral-7B's 32.

    The released checkpoint was trained to concentrate relevance at layer 20 (0-based) of 32; for other
    models the same relative depth is the starting point (`blockrank sweep-layers` measures better ones).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    return min(num_layers - 1, round(num_layers * 5 / 8))


def check_int(name: str, value: Any, low: int, high: int, optional: bool = False, why: str = "") -> None:
    """Refuse a non-int (bools included) or out-of-range value: it fails here, not as an overflow deep in torch."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        kind = "an int" + (" or None" if optional else "")
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} must be {kind} in [{low}, {high}]{reason}, got {value!r}")


def check_device(device: Any) -> torch.device:
    """The torch device for `device`; a ValueError when malformed, unsupported or absent on this machine."""
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device {device!r} is not a device; use one of {DEVICE_TYPES}, with an index if needed ('cuda:1')"
        ) from None
    if parsed.type == "meta":
        raise ValueError(f"device {device!r}: cannot compute scores on meta (it holds shapes, no data)")
    if parsed.type not in DEVICE_TYPES:
        raise ValueError(f"device {device!r}: type {parsed.type!r} is not supported; supported: {DEVICE_TYPES}")
    count = device_count(parsed.type)
    if count == 0:
        raise ValueError(
            f"device {device!r}: no {parsed.type} device is available on this machine (use device='auto' or 'cpu')"
        )
    if parsed.type != "cpu" and parsed.index is not None and parsed.index >= count:
        raise ValueError(f"device {device!r}: this machine has {count} {parsed.type} device(s), indices 0..{count - 1}")
    return parsed


def auto_device() -> str:
    """The first available of cuda, mps, cpu (device="auto")."""
    return next(kind for kind in AUTO_DEVICE_ORDER if device_count(kind) > 0)


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with bf16 matrix instructions


def cpu_bf16_flags() -> tuple[str, ...]:
    """Which of BF16_CPU_FLAGS this CPU has (Linux /proc/cpuinfo; () elsewhere or when unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next((set(line.split()) for line in cpuinfo if line.startswith("flags")), set())
    except OSError:
        return ()
    return tuple(flag for flag in BF16_CPU_FLAGS if flag in flags)


def auto_dtype(device: torch.device) -> str:
    """dtype="auto": bf16 matmuls (fp32 residual stream and readout) where bf16 is fast: CUDA with bf16 support,
    and CPUs with AMX-BF16 or AVX512-BF16 (a bf16 matmul measured 4.5x fp32 on an AVX512-BF16 AMD EPYC, ~6x with
    AMX; nDCG@10 stays within 0.005 of fp32, docs/benchmarks.md); fp32 elsewhere, where bf16 only emulates."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16-mixed"
    if device.type == "cpu" and cpu_bf16_flags():
        return "bfloat16-mixed"
    return "float32"


def device_count(device_type: str) -> int:
    """How many devices of `device_type` this process can use (mps counts as one when available)."""
    if device_type == "cpu":
        return 1
    if device_type == "mps":
        return int(torch.backends.mps.is_available())
    backend = getattr(torch, device_type)
    return backend.device_count() if backend.is_available() else 0


HeadWeights = tuple[tuple[int, tuple[float, ...]], ...]  # ((layer, (weight per query head, ...)), ...) by layer


def normalise_head_weights(value: Any) -> Optional[HeadWeights]:
    """`head_weights` given as {layer: [w_h, ...]} (layer keys may be digit strings, as in JSON) or as pairs,
    checked and scaled to sum to 1; None stays None. Every layer lists one weight per query head."""
    if value is None:
        return None
    pairs = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = [(layer, weights) for layer, weights in pairs]
    except (TypeError, ValueError):
        raise ValueError(f"head_weights must map layers to lists of head weights, got {value!r}") from None
    layers: dict[int, tuple[float, ...]] = {}
    for layer, weights in pairs:
        if isinstance(layer, str) and layer.isdigit() and len(layer) < 10:
            layer = int(layer)
        check_int("a head_weights layer", layer, 0, MAX_POSITION)
        if layer in layers:
            raise ValueError(f"head_weights lists layer {layer} twice")
        if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or not weights:
            raise ValueError(f"head_weights[{layer}] must be a non-empty list of weights, got {weights!r}")
        if not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights
        ):
            raise ValueError(f"head_weights[{layer}] must hold finite numbers >= 0, got {list(weights)!r}")
        layers[layer] = tuple(float(w) for w in weights)
    if not layers:
        raise ValueError("head_weights must weigh at least one layer (or be None for every head of L*)")
    if len({len(w) for w in layers.values()}) > 1:
        raise ValueError("head_weights must list the same number of heads at every layer")
    total = sum(sum(w) for w in layers.values())
    if not total > 0:
        raise ValueError("head_weights must have a positive weight somewhere")
    return tuple((layer, tuple(w / total for w in layers[layer])) for layer in sorted(layers))


def checked_calibration(value: Any) -> tuple[float, float]:
    """`relevance_calibration` as a (slope, intercept) tuple of finite floats, the slope > 0 (a list from JSON too)."""
    pair = tuple(value) if isinstance(value, (list, tuple)) else ()
    numbers = [v for v in pair if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if len(pair) != 2 or len(numbers) != 2 or not numbers[0] > 0:
        raise ValueError(f"relevance_calibration must be (slope > 0, intercept), finite numbers, got {value!r}")
    return float(numbers[0]), float(numbers[1])


@dataclass(frozen=True)
class BlockRankConfig:
    """How a prompt is built, run and scored. Unknown keys raise `TypeError` (dataclass semantics)."""

    # L*, the 0-based decoder layer read for scores; None: default_scoring_layer, or the deepest layer of head_weights
    scoring_layer: Optional[int] = None
    num_signal_tokens: int = 2  # last tokens of the query block whose attention is read (1 or 2)
    # first position id of the query block; None: P + max_block_tokens (right after the longest block);
    # BlockRank-trained checkpoints: 16384
    query_position_offset: Optional[int] = None
    max_block_tokens: int = 384  # cap on tokens per block (prefix, each document, query block)
    # "blockrank": block-sparse attention; "full": plain causal attention; "icr": zero-shot ICR (modes.py)
    scoring_mode: str = "blockrank"
    early_exit: bool = True  # stop after layer L* (False runs every layer and the LM head, for baselines)
    # "auto" | "triton" (fused kernel, CUDA) | "torch" (per-block SDPA) | "flex" (FlexAttention) | "dense" (a mask)
    attention_backend: str = "auto"
    # compute dtype: auto (resolved by `auto_dtype`) | float32 | bfloat16 | float16 | bfloat16-mixed (see DTYPES)
    dtype: str = "auto"
    device: str = "auto"  # torch device string, or auto: cuda, then mps, then cpu (resolved when the config is made)
    batch_tokens: int = 8192  # max query rows in one document attention call (bounds attention memory)
    # most tokens of several queries' prompts packed end to end into one forward by rerank_batch (each prompt still
    # sees only itself; scores equal one query at a time); a longer prompt runs alone; 0: one forward per query
    max_pack_tokens: int = 16384
    # activation memory one call may use (weights excluded); above it "blockrank" scoring runs chunked, exactly;
    # None: always one shot
    memory_budget_mb: Optional[float] = 2048
    # most documents one call takes (ValueError above it; the CLI stops reading there): bounds per-document
    # memory; None: no limit
    max_documents: Optional[int] = 100_000
    # which heads the readout averages, per layer: {layer: [weight of each query head]} (`blockrank
    # select-heads` writes them into a checkpoint); None: every head of L* equally. Stored normalised
    # (weights summing to 1) as ((layer, (w_0, ..., w_H-1)), ...), so the config stays hashable.
    head_weights: Optional[Any] = None
    # weight of the caller's order in the final ranking, fused with the model's ranking by reciprocal ranks
    # (scoring.fuse_with_input_order); for candidates given best-first by a first stage (BM25, a vector index).
    # 0: the model's scores alone (the default); 1: the input order unchanged
    input_order_weight: float = 0.0
    # a document longer than max_block_tokens: "truncate" (cut at the block length) or "split" (continued in up
    # to max_document_blocks consecutive blocks, each seeing the prefix and itself; cost stays linear)
    long_documents: str = "truncate"
    max_document_blocks: int = 8
    # how a split document's block scores make its score: "max" (its best block; the default, chosen on scifact-dev:
    # docs/results.md) or "sum" (its share of the attention, still summing to 1 over the call)
    split_scores: str = "max"
    # (slope, intercept) of relevance_score = sigmoid(slope * relevance logit + intercept), the relevance logit being
    # a document's attention mass relative to the prefix's (scoring.relevance_logits); a model's fitted values
    # (bench/fit_relevance.py, on dev data) come with its settings
    relevance_calibration: tuple[float, float] = (1.0, 0.0)

    def __post_init__(self) -> None:
        check_int("scoring_layer", self.scoring_layer, 0, MAX_POSITION, optional=True)
        check_int("max_block_tokens", self.max_block_tokens, 8, MAX_BLOCK_TOKENS)
        check_int("num_signal_tokens", self.num_signal_tokens, 1, self.max_block_tokens)
        check_int(
            "query_position_offset",
            self.query_position_offset,
            0,
            MAX_POSITION - self.max_block_tokens,
            optional=True,
            why=(
                f"the query block's positions run up to offset + max_block_tokens ({self.max_block_tokens}), "
                f"which must stay <= {MAX_POSITION}"
            ),
        )
        if self.scoring_mode not in SCORING_MODES:
            raise ValueError(f"scoring_mode must be one of {tuple(SCORING_MODES)}, got {self.scoring_mode!r}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")
        if not isinstance(self.dtype, str) or self.dtype not in (*DTYPES, "auto"):
            raise ValueError(f"dtype must be one of {('auto', *DTYPES)}, got {self.dtype!r}")
        check_int("batch_tokens", self.batch_tokens, 1, MAX_POSITION)
        check_int("max_pack_tokens", self.max_pack_tokens, 0, MAX_POSITION)
        budget = self.memory_budget_mb
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0):
            raise ValueError(f"memory_budget_mb must be None or a number > 0, got {budget!r}")
        if self.max_documents is not None and (
            isinstance(self.max_documents, bool) or not isinstance(self.max_documents, int) or self.max_documents < 1
        ):
            raise ValueError(f"max_documents must be None or an int >= 1, got {self.max_documents!r}")
        if self.device == "auto":
            object.__setattr__(self, "device", auto_device())
        device = check_device(self.device)
        if self.dtype == "auto":
            object.__setattr__(self, "dtype", auto_dtype(device))
        if self.long_documents not in LONG_DOCUMENTS:
            raise ValueError(f"long_documents must be one of {LONG_DOCUMENTS}, got {self.long_documents!r}")
        if self.split_scores not in SPLIT_SCORES:
            raise ValueError(f"split_scores must be one of {SPLIT_SCORES}, got {self.split_scores!r}")
        check_int("max_document_blocks", self.max_document_blocks, 1, 4096)
        weight = self.input_order_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise ValueError(f"input_order_weight must be a number in [0, 1], got {weight!r}")
        object.__setattr__(self, "head_weights", normalise_head_weights(self.head_weights))
        object.__setattr__(self, "relevance_calibration", checked_calibration(self.relevance_calibration))
        if self.head_weights is not None and self.scoring_layer is not None and self.scoring_layer != self.exit_layer:
            raise ValueError(
                f"scoring_layer={self.scoring_layer} but head_weights read layers up to {self.exit_layer}; "
                "with head_weights the deepest weighted layer is L* "
                "(leave scoring_layer unset, or set head_weights=None)"
            )

    @property
    def blocks_per_document(self) -> int:
        """Most blocks one document may take: 1 when long documents are truncated."""
        return self.max_document_blocks if self.long_documents == "split" else 1

    @property
    def torch_dtype(self) -> torch.dtype:
        """dtype of the model's weights."""
        return DTYPES[self.dtype]

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        """dtype matmuls and attention run in under autocast, or None when the weights' dtype is used throughout."""
        return AUTOCAST_DTYPES.get(self.dtype)

    def replace(self, **changes: Any) -> "BlockRankConfig":
        """A copy with `changes` applied and validated."""
        return dataclasses.replace(self, **changes)

    def resolved_query_position_offset(self, prefix_length: int) -> int:
        """First position id of the query block for a prompt whose prefix has `prefix_length` real tokens.

        A model not trained with BlockRank has only seen the query follow the passages closely, so the default
        puts it right after the longest block a document may have; a checkpoint trained with a far offset
        (16384 for the released one and for ours) records it, and that value is used as given.
        """
        return (
            prefix_length + self.max_block_tokens if self.query_position_offset is None else self.query_position_offset
        )

    @property
    def exit_layer(self) -> Optional[int]:
        """The deepest layer `head_weights` reads (where the forward stops), or None without head weights."""
        return None if self.head_weights is None else self.head_weights[-1][0]

    def head_weights_dict(self) -> Optional[dict[int, list[float]]]:
        """`head_weights` as {layer: [weights]}, the form a user writes and `blockrank.json` stores."""
        return None if self.head_weights is None else {layer: list(weights) for layer, weights in self.head_weights}

    def resolved_scoring_layer(self, num_layers: int) -> int:
        """L* for a model of `num_layers` layers (the deepest weighted layer with head_weights), checked to exist."""
        layer = self.scoring_layer if self.scoring_layer is not None else self.exit_layer
        layer = default_scoring_layer(num_layers) if layer is None else layer
        if layer >= num_layers:
            raise ValueError(f"scoring_layer={layer} but the model has only {num_layers} layers (0-based)")
        return layer
