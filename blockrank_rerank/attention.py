"""Attention backends over a packed BlockRank stream, chosen by name from a registry.

Every backend has the signature `(q, k, v, plan, scale) -> out` with q (H, T, D), k and v (Hkv, T, D) and
out (H, T, D); GQA key/value heads are shared by H // Hkv query heads. "torch" never builds a (T, T) mask:
the prefix runs causally, documents run in length buckets against the shared prefix plus themselves, and
the query block runs over the whole stream, so cost and memory grow linearly with the number of documents.
"dense" is the plain specification (explicit (T, T) mask, fp32 softmax) used as a fallback and in tests.
"triton" is the fused kernel of `blockrank_rerank.kernels` (CUDA); "auto" picks Triton -> torch -> dense.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Union

import torch
import torch.nn.functional as F

from .layout import BlockLayout, attends

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DocumentBucket:
    """Documents of similar length attended together, padded to the longest one."""

    index: torch.Tensor  # (G, L) stream indices; padded slots point at the bucket's first token
    valid: torch.Tensor  # (G, L) bool, False on padded slots
    mask: torch.Tensor  # (G, 1, L, P + L) bool, True where the row may attend the key
    slot_groups: torch.Tensor  # (R,) long: document (0..G-1) of each valid slot, row-major
    slot_offsets: torch.Tensor  # (R,) long: offset (0..L-1) of each valid slot
    rows: torch.Tensor  # (R,) long: their stream indices, index[valid] (integer indices: no host sync on a GPU)


@dataclass(frozen=True)
class AttentionPlan:
    """What a backend needs to know about one stream, computed once per forward and shared by all layers."""

    layout: BlockLayout
    max_rows: int = 8192  # most document rows in one bucket's SDPA call
    buckets: tuple[DocumentBucket, ...] = ()
    query_mask: Optional[torch.Tensor] = None  # (Lq, T) bool, rows of the query block and of any reader block after it
    # (T,) long: stream index of each row of torch_attention's output in its computed order (prefix, buckets, query)
    destinations: Optional[torch.Tensor] = None
    dense_mask: dict = field(default_factory=dict)  # cache: dtype -> (T, T) additive mask
    # cache: device -> the Triton kernel's (row_start, context_end); ("flex", device) -> FlexAttention's BlockMask
    kernel_arguments: dict = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return self.layout.num_tokens

    def segments(self) -> Iterator[tuple[slice, "AttentionPlan"]]:
        """The one prompt of this plan and where it lies in the stream (see `PromptPack.segments`)."""
        yield slice(0, self.layout.num_tokens), self


@dataclass(frozen=True)
class PromptPack:
    """Several prompts laid end to end in one stream (multi-query packing): projections and MLPs run once over
    all their tokens, while attention runs per prompt, so no prompt ever sees another and each prompt's scores
    equal those of a forward of its own."""

    plans: tuple[AttentionPlan, ...]

    @property
    def num_tokens(self) -> int:
        return sum(plan.layout.num_tokens for plan in self.plans)

    def segments(self) -> Iterator[tuple[slice, AttentionPlan]]:
        """Each prompt's plan and its rows `[start, end)` of the packed stream, in order."""
        start = 0
        for plan in self.plans:
            yield slice(start, start + plan.layout.num_tokens), plan
            start += plan.layout.num_tokens


StreamPlan = Union[AttentionPlan, PromptPack]  # what a stream's attention runs by: one prompt, or several packed


def bucket_documents(lengths: tuple[int, ...], max_rows: int, slack: float = 0.9) -> list[list[int]]:
    """Group document indices, longest first, so padding stays under 1 - `slack` and rows under `max_rows`."""
    order = sorted(range(len(lengths)), key=lambda k: (-lengths[k], k))
    buckets: list[list[int]] = []
    for k in order:
        if buckets:
            current = buckets[-1]
            longest = lengths[current[0]]
            if lengths[k] >= slack * longest and (len(current) + 1) * longest <= max_rows:
                current.append(k)
                continue
        buckets.append([k])
    return buckets


def plan_buckets(
    layout: BlockLayout, documents: range, max_rows: int = 8192, device: torch.device | str = "cpu", index_base: int = 0
) -> tuple[DocumentBucket, ...]:
    """Length buckets of `documents`, each attending the prefix keys first, then its own; masks from `layout.attends`.

    Bucket indices count from stream index `index_base` (0: the whole stream; the chunked path passes its chunk's
    start).
    """
    prefix = layout.prefix_length
    starts, lengths = layout.document_starts, layout.document_lengths
    rows_of = [torch.arange(starts[k], starts[k] + lengths[k]) for k in documents]
    if rows_of and not all(
        bool((layout.context_end[r] == prefix).all() and (layout.row_start[r] == starts[k]).all())
        for k, r in zip(documents, rows_of)
    ):
        raise ValueError(
            "bucketed attention assumes documents whose context is the prefix and whose block is themselves"
        )
    buckets = []
    for members in bucket_documents(tuple(lengths[k] for k in documents), max_rows):
        members = [documents[k] for k in members]
        longest = lengths[members[0]]
        offsets = torch.arange(longest)
        member_starts = torch.tensor([starts[k] for k in members])
        member_lengths = torch.tensor([lengths[k] for k in members])
        valid = offsets[None, :] < member_lengths[:, None]  # (G, L)
        rows = torch.where(
            valid, member_starts[:, None] + offsets[None, :], member_starts[:, None]
        )  # (G, L) stream indices
        keys = torch.cat([torch.arange(prefix).expand(len(members), -1), rows], dim=1)  # (G, P + L)
        key_valid = torch.cat([torch.ones(len(members), prefix, dtype=torch.bool), valid], dim=1)  # (G, P + L)
        allowed = attends(
            rows[:, :, None], keys[:, None, :], layout.row_start[rows][:, :, None], layout.context_end[rows][:, :, None]
        )
        mask = (allowed & key_valid[:, None, :])[:, None]  # (G, 1, L, P + L)
        local = rows - index_base
        groups, offsets = valid.nonzero(as_tuple=True)  # (R,) each, row-major, on the host at plan time
        buckets.append(
            DocumentBucket(
                local.to(device),
                valid.to(device),
                mask.to(device),
                groups.to(device),
                offsets.to(device),
                local[valid].to(device),
            )
        )
    return tuple(buckets)


def plan_attention(layout: BlockLayout, max_rows: int = 8192, device: torch.device | str = "cpu") -> AttentionPlan:
    """Precompute document buckets and the mask of the final blocks' rows (query block, any reader block) for
    `layout`."""
    if layout.causal_positions:
        return AttentionPlan(layout=layout, max_rows=max_rows)
    buckets = plan_buckets(layout, range(layout.num_documents), max_rows, device)
    final_rows = torch.arange(layout.query_start, layout.num_tokens)
    query_mask = layout.allowed_keys(final_rows, torch.arange(layout.num_tokens))  # (Lq, T)
    destinations = torch.cat(
        [torch.arange(layout.prefix_length), *(bucket.rows.cpu() for bucket in buckets), final_rows]
    )  # (T,)
    return AttentionPlan(
        layout=layout,
        max_rows=max_rows,
        buckets=buckets,
        query_mask=query_mask.to(device),
        destinations=destinations.to(device),
    )


def sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """SDPA on one sequence, causal when `mask` is None. Shapes: q (H, Tq, D), k/v (Hkv, Tk, D) -> (H, Tq, D).

    The batch dimension added here is what lets PyTorch pick its flash kernel on CPU (3-D inputs fall back
    to the math kernel, 6x slower and quadratic in memory).
    """
    out = F.scaled_dot_product_attention(
        q[None], k[None], v[None], attn_mask=mask, is_causal=mask is None, scale=scale, enable_gqa=True
    )
    return out[0]


def bucket_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_prefix: torch.Tensor,
    v_prefix: torch.Tensor,
    bucket: DocumentBucket,
    scale: float,
) -> torch.Tensor:
    """Attention of one bucket's documents over the prefix and themselves (causal).

    Shapes: q (H, T, D), k/v (Hkv, T, D) indexed by `bucket.index`, k_prefix/v_prefix (Hkv, P, D) -> (H, rows, D),
    the bucket's valid rows in row-major (document, offset) order.
    """
    group = bucket.index.shape[0]
    q_docs = q[:, bucket.index].transpose(0, 1)  # (H, G, L, D) -> (G, H, L, D)
    k_docs = k[:, bucket.index].transpose(0, 1)  # (G, Hkv, L, D)
    v_docs = v[:, bucket.index].transpose(0, 1)  # (G, Hkv, L, D)
    keys = torch.cat([k_prefix[None].expand(group, -1, -1, -1), k_docs], dim=2)  # (G, Hkv, P + L, D)
    values = torch.cat([v_prefix[None].expand(group, -1, -1, -1), v_docs], dim=2)  # (G, Hkv, P + L, D)
    out = F.scaled_dot_product_attention(q_docs, keys, values, attn_mask=bucket.mask, scale=scale, enable_gqa=True)
    by_head = out.transpose(0, 1)  # (G, H, L, D) -> (H, G, L, D)
    return by_head[:, bucket.slot_groups, bucket.slot_offsets]  # (H, rows, D), the valid slots row-major


def torch_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan, scale: float
) -> torch.Tensor:
    """Block-sparse attention from per-block SDPA calls. Shapes: q (H, T, D), k/v (Hkv, T, D) -> (H, T, D)."""
    layout = plan.layout
    if layout.causal_positions:
        return sdpa(q, k, v, scale)
    prefix = layout.prefix_length
    pieces = [sdpa(q[:, :prefix], k[:, :prefix], v[:, :prefix], scale)]
    for bucket in plan.buckets:
        pieces.append(bucket_attention(q, k, v, k[:, :prefix], v[:, :prefix], bucket, scale))
    start = layout.query_start
    pieces.append(sdpa(q[:, start:], k, v, scale, plan.query_mask))
    packed = torch.cat(pieces, dim=1)  # (H, T, D) in computed order
    return packed.new_zeros(q.shape).index_copy(1, plan.destinations, packed)  # autocast: packed may be narrower


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan, scale: float
) -> torch.Tensor:
    """Attention with an explicit (T, T) additive mask and fp32 softmax. Shapes: as `torch_attention`."""
    groups = q.shape[0] // k.shape[0]
    k = k.repeat_interleave(groups, dim=0)  # (Hkv, T, D) -> (H, T, D)
    v = v.repeat_interleave(groups, dim=0)
    if q.dtype not in plan.dense_mask:
        allowed = plan.layout.allowed().to(q.device)
        plan.dense_mask[q.dtype] = torch.zeros(allowed.shape, device=q.device).masked_fill(
            ~allowed, torch.finfo(torch.float32).min
        )
    logits = (q.float() @ k.float().transpose(1, 2)) * scale + plan.dense_mask[q.dtype]  # (H, T, T)
    return (logits.softmax(dim=-1) @ v.float()).to(q.dtype)


def autocast_operands(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Under autocast, every operand in the autocast dtype (RoPE's fp32 tables leave q and k wider than v);
    unchanged otherwise. Kernels outside autocast's op lists need one dtype."""
    device_type = tensors[0].device.type
    if not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(t.to(dtype) for t in tensors)


def triton_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan, scale: float
) -> torch.Tensor:
    """Fused block-sparse Triton kernel (`blockrank_rerank.kernels.block_attention`). Shapes: as `torch_attention`."""
    from .kernels.block_attention import block_attention

    q, k, v = autocast_operands(q, k, v)
    if q.device not in plan.kernel_arguments:  # once per forward, not per layer
        plan.kernel_arguments[q.device] = plan.layout.kernel_arguments(q.device)
    row_start, context_end = plan.kernel_arguments[q.device]
    return block_attention(q, k, v, row_start, context_end, scale)


_compiled_flex: dict[str, Callable] = {}  # device type -> flex_attention, compiled once per process on accelerators


def flex_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan, scale: float
) -> torch.Tensor:
    """PyTorch FlexAttention with a BlockMask built from `attends` (fully masked tiles skipped).

    Compiled on accelerators (once per process; each new stream length compiles once more), eager on CPU.
    Shapes: as `torch_attention`.
    """
    from torch.nn.attention.flex_attention import create_block_mask
    from torch.nn.attention.flex_attention import flex_attention as flex

    q, k, v = autocast_operands(q, k, v)
    key = ("flex", q.device)
    if key not in plan.kernel_arguments:  # once per forward, not per layer
        row_start = plan.layout.row_start.to(q.device)
        context_end = plan.layout.context_end.to(q.device)

        def mask_mod(batch, head, q_idx, kv_idx):
            return attends(q_idx, kv_idx, row_start[q_idx], context_end[q_idx])

        length = q.shape[1]
        plan.kernel_arguments[key] = create_block_mask(mask_mod, None, None, length, length, device=q.device)
    if q.device.type not in _compiled_flex:
        _compiled_flex[q.device.type] = flex if q.device.type == "cpu" else torch.compile(flex)
    out = _compiled_flex[q.device.type](
        q[None], k[None], v[None], block_mask=plan.kernel_arguments[key], scale=scale, enable_gqa=True
    )  # (1, H, T, D)
    return out[0]


AttentionFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, AttentionPlan, float], torch.Tensor]
ATTENTION_FUNCTIONS: dict[str, AttentionFunction] = {
    "triton": triton_attention,
    "torch": torch_attention,
    "flex": flex_attention,
    "dense": dense_attention,
}


def attend(
    backend: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: StreamPlan, scale: float
) -> torch.Tensor:
    """Attention of the stream of `plan` by the registered `backend`, once per prompt of a pack.

    Shapes: q (H, T, D), k/v (Hkv, T, D) -> (H, T, D); each prompt's rows are a view, its output joins the rest.
    """
    function = ATTENTION_FUNCTIONS[backend]
    outputs = [function(q[:, rows], k[:, rows], v[:, rows], prompt, scale) for rows, prompt in plan.segments()]
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)  # (H, T_prompt, D) each -> (H, T, D)


AUTO_ORDER = ("triton", "torch", "dense")  # what "auto" tries, fastest first
_logged_choices: set[tuple[str, str]] = set()


def backend_unavailable(
    name: str, device: torch.device, *, auto: bool = False, compute_dtype: Optional[torch.dtype] = None
) -> Optional[str]:
    """Why backend `name` cannot (or, for `auto`, should not) run on `device`, or None when it can.

    With `auto`, Triton counts only on CUDA and only for 16-bit compute: in fp32 the kernel measured ~18x
    slower than per-block SDPA on an H200 (docs/benchmarks.md, end-to-end latency).
    """
    from .kernels import triton_available, triton_interpreting

    if name == "triton" and auto and compute_dtype == torch.float32:
        return "in float32 per-block SDPA is faster than the Triton kernel (docs/benchmarks.md)"
    if name == "triton":
        if not triton_available():
            return "the triton package is not installed (pip install 'blockrank-rerank[triton]')"
        if device.type != "cuda" and (auto or device.type != "cpu" or not triton_interpreting()):
            return (
                f"Triton kernels need a CUDA device, got {device} (TRITON_INTERPRET=1 runs them on CPU, for tests only)"
            )
        if auto and triton_interpreting():
            return (
                "TRITON_INTERPRET=1 is set, which would run the kernels in Triton's (slow) interpreter, "
                "a mode for tests"
            )
    if name in ("torch", "flex") and tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 5):
        return f"{name} attention needs torch >= 2.5 (enable_gqa, FlexAttention), found {torch.__version__}"
    return None


def resolve_backend(name: str, device: torch.device | str, compute_dtype: Optional[torch.dtype] = None) -> str:
    """The registered backend for `name`; "auto" takes the first usable one of AUTO_ORDER and logs its choice once.

    An explicitly named backend that cannot run on `device` raises: ImportError when triton is missing
    (naming the extra), ValueError otherwise.
    """
    device = torch.device(device)
    if name == "auto":
        skipped = []
        for candidate in AUTO_ORDER:
            reason = backend_unavailable(candidate, device, auto=True, compute_dtype=compute_dtype)
            if reason is None:
                break
            skipped.append(f"{candidate}: {reason}")
        if (device.type, candidate) not in _logged_choices:
            _logged_choices.add((device.type, candidate))
            logger.info(
                "attention backend 'auto' on %s -> %r%s",
                device,
                candidate,
                f" (skipped {'; '.join(skipped)})" if skipped else "",
            )
        return candidate
    if name not in ATTENTION_FUNCTIONS:
        raise ValueError(f"unknown attention backend {name!r}; available: {sorted(ATTENTION_FUNCTIONS)} or 'auto'")
    reason = backend_unavailable(name, device)
    if reason is not None:
        from .kernels import triton_available

        error = ImportError if name == "triton" and not triton_available() else ValueError
        raise error(f"attention_backend={name!r} is unavailable: {reason}")
    return name
