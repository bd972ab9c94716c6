"""Training prompts: K candidates with the positives forced in, shuffled, and the answer as a completion.

The prompt is exactly the inference prompt (docs/design.md §1) followed by the completion "i, j]" + EOS after the
answer opening "[" (docs/design.md §5): the signal rows are the same two tokens that inference reads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..layout import BlockLayout, build_layout
from ..tokenize import tokenize_prompt
from .examples import RankingExample


@dataclass(frozen=True)
class TrainingPrompt:
    """One packed training stream and which of its documents are relevant."""

    layout: BlockLayout  # prompt + completion, completion_length > 0
    positives: torch.Tensor  # (N,) bool, True for relevant documents
    source: str


def sample_candidates(
    example: RankingExample, num_candidates: int, max_positives: int, rng: random.Random, negative_pool: Sequence[str]
) -> tuple[list[str], list[bool]]:
    """Up to `max_positives` positives plus negatives (hard ones first, then random pool passages), shuffled."""
    positives = rng.sample(list(example.positives), min(max_positives, len(example.positives), num_candidates - 1))
    taken = set(positives) | set(example.positives)
    negatives = [n for n in dict.fromkeys(example.negatives) if n not in taken]
    rng.shuffle(negatives)
    negatives = negatives[: num_candidates - len(positives)]
    attempts = 0
    while len(positives) + len(negatives) < num_candidates and negative_pool and attempts < 4 * num_candidates:
        attempts += 1
        passage = negative_pool[rng.randrange(len(negative_pool))]
        if passage not in taken and passage not in negatives:
            negatives.append(passage)
    candidates = [(p, True) for p in positives] + [(n, False) for n in negatives]
    rng.shuffle(candidates)
    return [c[0] for c in candidates], [c[1] for c in candidates]


def completion_text(positive_ids: Sequence[int]) -> str:
    """What follows the answer opening "[": the relevant ids in prompt order, then "]"."""
    return ", ".join(str(i) for i in positive_ids) + "]"


def completion_ids(tokenizer: Any, positive_ids: Sequence[int]) -> list[int]:
    """Token ids of the completion, tokenised on its own, ending in EOS."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token_id; the completion must end with EOS")
    ids = tokenizer(completion_text(positive_ids), add_special_tokens=False)["input_ids"]
    return [*ids, tokenizer.eos_token_id]


def build_training_prompt(
    tokenizer: Any,
    example: RankingExample,
    *,
    num_candidates: int,
    max_positives: int,
    max_block_tokens: int,
    query_position_offset: int,
    rng: random.Random,
    negative_pool: Sequence[str] = (),
) -> TrainingPrompt:
    """The packed stream of one training prompt for `example`, candidates drawn with `rng`."""
    texts, relevant = sample_candidates(example, num_candidates, max_positives, rng, negative_pool)
    prompt = tokenize_prompt(tokenizer, example.query, texts, max_block_tokens)
    answer = completion_ids(tokenizer, [k for k, r in enumerate(relevant) if r])
    layout = build_layout(prompt, query_position_offset=query_position_offset, completion=answer)
    return TrainingPrompt(layout=layout, positives=torch.tensor(relevant, dtype=torch.bool), source=example.source)
