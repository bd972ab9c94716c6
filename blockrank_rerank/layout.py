"""Positions and block structure of one prompt laid out as a single packed token stream.

The stream is `[prefix | doc_0 | ... | doc_{N-1} | query block]` with no padding anywhere: every token is
real, so position ids count real tokens only and no pad id is ever mistaken for a mask (SPEC 1.3).
Which token may attend to which is stated once, as predicates over block ids (SPEC 1.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .tokenize import TokenizedPrompt


@dataclass(frozen=True)
class BlockLayout:
    """Token ids, position ids and block ids of the packed stream of T tokens."""

    input_ids: torch.Tensor  # (T,) long
    position_ids: torch.Tensor  # (T,) long
    block_ids: torch.Tensor  # (T,) long: 0 prefix, 1..N documents, N+1 query block
    prefix_length: int  # P, real prefix tokens
    document_starts: tuple[int, ...]  # first stream index of each document block
    document_lengths: tuple[int, ...]  # tokens of each document block
    query_start: int  # first stream index of the query block
    causal_positions: bool  # True: plain causal prompt (positions 0..T-1), False: BlockRank layout
    completion_length: int = 0  # trailing answer tokens inside the query block (training only)

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_documents(self) -> int:
        return len(self.document_lengths)

    @property
    def query_length(self) -> int:
        return self.num_tokens - self.query_start

    @property
    def completion_start(self) -> int:
        """First stream index of the completion; `num_tokens` when there is none (inference)."""
        return self.num_tokens - self.completion_length

    def signal_rows(self, count: int) -> torch.Tensor:
        """Stream indices of the last `count` query-block tokens before any completion. Shapes: (S,)."""
        if count > self.query_length - self.completion_length:
            raise ValueError(f"num_signal_tokens={count} exceeds the query block's {self.query_length - self.completion_length} tokens")
        return torch.arange(self.completion_start - count, self.completion_start)

    def document_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Stream indices of all document tokens and the document each belongs to. Shapes: (Dtok,), (Dtok,)."""
        rows = torch.arange(self.prefix_length, self.query_start)
        owner = self.block_ids[self.prefix_length : self.query_start] - 1
        return rows, owner

    def allowed(self) -> torch.Tensor:
        """Dense boolean attention mask, True where query i may attend key j. Shapes: (T, T). For tests and dense paths."""
        return self.allowed_on("cpu")

    def allowed_on(self, device: torch.device | str) -> torch.Tensor:
        """`allowed()` built directly on `device`. Shapes: (T, T)."""
        q_idx = torch.arange(self.num_tokens, device=device)[:, None]
        kv_idx = torch.arange(self.num_tokens, device=device)[None, :]
        if self.causal_positions:
            return causal(q_idx, kv_idx)
        blocks = self.block_ids.to(device)
        return blockrank_allowed(blocks[:, None], blocks[None, :], q_idx, kv_idx, self.num_documents)


def causal(q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
    return kv_idx <= q_idx


def blockrank_allowed(
    q_block: torch.Tensor, kv_block: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor, num_documents: int
) -> torch.Tensor:
    """SPEC 1.2: causal inside a block; documents also see the prefix; the query block sees every block."""
    query_block = num_documents + 1
    same_block_causal = (q_block == kv_block) & causal(q_idx, kv_idx)
    document_sees_prefix = (q_block >= 1) & (q_block <= num_documents) & (kv_block == 0)
    query_sees_earlier = (q_block == query_block) & (kv_block < query_block)
    return same_block_causal | document_sees_prefix | query_sees_earlier


def build_layout(
    prompt: TokenizedPrompt, *, query_position_offset: int, causal_positions: bool = False, completion: Sequence[int] = ()
) -> BlockLayout:
    """Pack `prompt` into one stream; BlockRank positions unless `causal_positions` (plain 0..T-1).

    `completion` (training only) is appended to the query block: the answer the model should generate after
    the answer opening, e.g. the tokens of "3, 7]" and EOS. The signal rows stay the last tokens before it.
    """
    prefix_length = len(prompt.prefix)
    lengths = tuple(len(ids) for ids in prompt.documents)
    if min(lengths, default=1) < 1 or prefix_length < 1 or len(prompt.query_block) < 1:
        raise ValueError("every block must hold at least one token")
    ids = [*prompt.prefix]
    positions = list(range(prefix_length))
    blocks = [0] * prefix_length
    starts = []
    for k, doc in enumerate(prompt.documents):
        starts.append(len(ids))
        ids.extend(doc)
        positions.extend(range(prefix_length, prefix_length + len(doc)))
        blocks.extend([k + 1] * len(doc))
    query_start = len(ids)
    query_block = [*prompt.query_block, *completion]
    ids.extend(query_block)
    positions.extend(range(query_position_offset, query_position_offset + len(query_block)))
    blocks.extend([len(prompt.documents) + 1] * len(query_block))
    if causal_positions:
        positions = list(range(len(ids)))
    return BlockLayout(
        input_ids=torch.tensor(ids, dtype=torch.long),
        position_ids=torch.tensor(positions, dtype=torch.long),
        block_ids=torch.tensor(blocks, dtype=torch.long),
        prefix_length=prefix_length,
        document_starts=tuple(starts),
        document_lengths=lengths,
        query_start=query_start,
        causal_positions=causal_positions,
        completion_length=len(completion),
    )
