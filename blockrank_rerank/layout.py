"""Positions and block structure of one prompt laid out as a single packed token stream.

The stream is `[prefix | doc_0 | ... | doc_{N-1} | query block]` with no padding anywhere: every token is
real, so position ids count real tokens only and no pad id is ever mistaken for a mask (docs/design.md §3).
Which token may attend to which is stated once, in `attends` (docs/design.md §2).
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
    block_ids: torch.Tensor  # (T,) long: 0 prefix, 1..N documents, N+1 query block, N+2 a reader block (ICR)
    prefix_length: int  # P, real prefix tokens
    document_starts: tuple[int, ...]  # first stream index of each document block
    document_lengths: tuple[int, ...]  # tokens of each document block
    query_start: int  # first stream index of the query block
    causal_positions: bool  # True: plain causal prompt (positions 0..T-1), False: BlockRank layout
    row_start: torch.Tensor  # (T,) long: first stream index of each token's own block (see `attends`)
    context_end: torch.Tensor  # (T,) long: end of each token's shared context (see `attends`)
    completion_length: int = 0  # trailing answer tokens inside the query block (training only)
    reader_starts: tuple[int, ...] = ()  # starts of extra final blocks that replace the query block (ICR calibration)
    document_of_block: tuple[int, ...] = ()  # input document of each document block when long ones are split

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_documents(self) -> int:
        return len(self.document_lengths)

    @property
    def query_end(self) -> int:
        """One past the last stream index of the query block (extra reader blocks follow it)."""
        return self.reader_starts[0] if self.reader_starts else self.num_tokens

    @property
    def query_length(self) -> int:
        return self.query_end - self.query_start

    @property
    def completion_start(self) -> int:
        """First stream index of the completion; `query_end` when there is none (inference)."""
        return self.query_end - self.completion_length

    def signal_rows(self, count: int) -> torch.Tensor:
        """Stream indices of the last `count` query-block tokens before any completion. Shapes: (S,)."""
        if count > self.query_length - self.completion_length:
            raise ValueError(
                f"num_signal_tokens={count} exceeds the query block's "
                f"{self.query_length - self.completion_length} tokens"
            )
        return torch.arange(self.completion_start - count, self.completion_start)

    def document_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Stream indices of all document tokens and the document each belongs to. Shapes: (Dtok,), (Dtok,)."""
        rows = torch.arange(self.prefix_length, self.query_start)
        owner = self.block_ids[self.prefix_length : self.query_start] - 1
        return rows, owner

    def allowed(self) -> torch.Tensor:
        """Dense boolean attention mask, True where query i may attend key j. Shapes: (T, T). For tests and
        dense paths."""
        return self.allowed_on("cpu")

    def allowed_on(self, device: torch.device | str) -> torch.Tensor:
        """`allowed()` built directly on `device`, from `attends`. Shapes: (T, T)."""
        rows = torch.arange(self.num_tokens, device=device)
        return self.allowed_keys(rows, rows)

    def allowed_keys(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Which of `keys` each of `rows` may attend (stream indices), by `attends`. Shapes: (R,), (K,) -> (R, K)."""
        row_start = self.row_start.to(rows.device)[rows]
        context_end = self.context_end.to(rows.device)[rows]
        return attends(rows[:, None], keys[None, :], row_start[:, None], context_end[:, None])

    def kernel_arguments(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """`attends`' per-token bounds as the Triton kernels take them: (row_start, context_end).
        Shapes: (T,) int32 each."""
        return self.row_start.to(device, torch.int32), self.context_end.to(device, torch.int32)

    def with_reader_block(self, token_ids: Sequence[int]) -> "BlockLayout":
        """This layout plus a second final block that reads the same prefix and documents and replaces the query block.

        It takes the query block's position ids and sees the context and itself, never the query block (ICR's
        calibration pass). Shapes: the stream grows by len(token_ids) tokens.
        """
        if self.causal_positions or self.completion_length or self.reader_starts:
            raise ValueError("a reader block needs an inference BlockRank layout without one already")
        count = len(token_ids)
        start = self.num_tokens
        first = int(self.position_ids[self.query_start])
        return BlockLayout(
            input_ids=torch.cat([self.input_ids, torch.tensor(list(token_ids), dtype=torch.long)]),
            position_ids=torch.cat([self.position_ids, torch.arange(first, first + count)]),
            block_ids=torch.cat([self.block_ids, torch.full((count,), self.num_documents + 2, dtype=torch.long)]),
            row_start=torch.cat([self.row_start, torch.full((count,), start, dtype=torch.long)]),
            context_end=torch.cat([self.context_end, torch.full((count,), self.query_start, dtype=torch.long)]),
            prefix_length=self.prefix_length,
            document_starts=self.document_starts,
            document_lengths=self.document_lengths,
            query_start=self.query_start,
            causal_positions=False,
            reader_starts=(*self.reader_starts, start),
        )


def attends(
    q_idx: torch.Tensor, kv_idx: torch.Tensor, row_start: torch.Tensor, context_end: torch.Tensor
) -> torch.Tensor:
    """The attention rule, stated once (docs/design.md §2): token i attends key j iff j <= i and j lies in
    i's shared context `[0, context_end[i])` or in i's own block up to i, `[row_start[i], i]`.

    Prefix rows: no context, their block starts at 0 (causal). Document rows: the prefix is their context,
    their block is the document. Query-block rows: prefix and documents are their context. A plain causal
    prompt is every row with block start 0. Dense masks, SDPA buckets and the kernels' arguments derive from it.
    """
    return (kv_idx <= q_idx) & ((kv_idx < context_end) | (kv_idx >= row_start))


def block_bounds(
    block_ids: torch.Tensor,
    prefix_length: int,
    document_starts: Sequence[int],
    query_start: int,
    causal_positions: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token: first stream index of its own block and end of its shared context (see `attends`).
    Shapes: (T,), (T,)."""
    if causal_positions:
        return torch.zeros_like(block_ids), torch.zeros_like(block_ids)
    num_documents = len(document_starts)
    starts = torch.tensor([0, *document_starts, query_start], dtype=torch.long)  # per block id
    contexts = torch.tensor([0, *[prefix_length] * num_documents, query_start], dtype=torch.long)
    return starts[block_ids], contexts[block_ids]


def build_layout(
    prompt: TokenizedPrompt,
    *,
    query_position_offset: int,
    causal_positions: bool = False,
    completion: Sequence[int] = (),
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
    block_ids = torch.tensor(blocks, dtype=torch.long)
    row_start, context_end = block_bounds(block_ids, prefix_length, starts, query_start, causal_positions)
    return BlockLayout(
        input_ids=torch.tensor(ids, dtype=torch.long),
        position_ids=torch.tensor(positions, dtype=torch.long),
        block_ids=block_ids,
        row_start=row_start,
        context_end=context_end,
        prefix_length=prefix_length,
        document_starts=tuple(starts),
        document_lengths=lengths,
        query_start=query_start,
        causal_positions=causal_positions,
        completion_length=len(completion),
        document_of_block=prompt.document_of_block,
    )
