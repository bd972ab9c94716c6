"""Haystack: the pipeline in `haystack_pipeline.yaml` (BlockRankRanker -> PromptBuilder) fed by a FAISS retriever.

    python examples/haystack_faiss_rerank.py                  # 10 queries, full corpus (first run embeds it: minutes)
    python examples/haystack_faiss_rerank.py --smoke          # 3 queries, small corpus (CI)

Prints FAISS's and BlockRank's top documents per query and nDCG@10 of both on the same candidates.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from haystack import Document, Pipeline, component
from scifact_faiss import (
    FaissIndex,
    SciFact,
    example_arguments,
    load_scifact,
    print_comparison,
    print_summary,
    ranker_settings,
)

PIPELINE_YAML = Path(__file__).with_name("haystack_pipeline.yaml")
TRUSTED_MODULES = ["blockrank_rerank"]  # Haystack 3 deserialises classes only from allowlisted modules


def load_pipeline(data: Dict[str, Any]) -> Pipeline:
    """`Pipeline.from_dict` trusting blockrank_rerank on Haystack 3 (which has `allowed_modules`); Haystack 2
    needs no allowlist."""
    if "allowed_modules" in inspect.signature(Pipeline.from_dict).parameters:
        return Pipeline.from_dict(data, allowed_modules=TRUSTED_MODULES)
    return Pipeline.from_dict(data)


@component
class FaissRetriever:
    """The `top_k` nearest SciFact abstracts as Documents (id = docid, title in meta, cosine as score)."""

    def __init__(self, index: FaissIndex, data: SciFact, top_k: int = 20) -> None:
        self.index, self.data, self.top_k = index, data, top_k

    @component.output_types(documents=List[Document])
    def run(self, query: str) -> Dict[str, List[Document]]:
        corpus = self.data.corpus
        hits = self.index.search(query, self.top_k)
        return {
            "documents": [
                Document(id=d, content=corpus[d]["text"], meta={"title": corpus[d]["title"]}, score=s) for d, s in hits
            ]
        }


def build_pipeline(index: FaissIndex, data: SciFact, args: argparse.Namespace) -> Pipeline:
    """The YAML pipeline with the ranker's options from `args` and the FAISS retriever connected in front of it."""
    spec = yaml.safe_load(PIPELINE_YAML.read_text(encoding="utf-8"))
    ranker = spec["components"]["ranker"]["init_parameters"]
    settings = ranker_settings(args)
    ranker["model"], ranker["scoring_mode"] = args.model, settings.pop("scoring_mode")
    ranker["config"] = {**ranker["config"], **settings}
    pipeline = load_pipeline(spec)
    pipeline.add_component("retriever", FaissRetriever(index, data, top_k=args.depth))
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = example_arguments(__doc__, argv)
    data = load_scifact(args.queries, smoke=args.smoke)
    pipeline = build_pipeline(FaissIndex(data.corpus), data, args)
    pipeline.warm_up()  # loads the model once; every run below reuses it
    first_stage, reranked = {}, {}
    for qid, query in data.queries.items():
        inputs = {
            "retriever": {"query": query},
            "ranker": {"query": query, "top_k": args.depth},
            "prompt_builder": {"query": query},
        }
        result = pipeline.run(inputs, include_outputs_from={"retriever", "ranker"})
        retrieved, ranked = result["retriever"]["documents"], result["ranker"]["documents"]
        first_stage[qid] = [d.id for d in retrieved]
        reranked[qid] = [d.id for d in ranked]
        print_comparison(query, [(d.id, d.score) for d in retrieved], [(d.id, d.score) for d in ranked], data, qid)
    before, after = print_summary(first_stage, reranked, data, args.depth)
    return {"first_stage": first_stage, "reranked": reranked, "ndcg10_first_stage": before, "ndcg10_reranked": after}


if __name__ == "__main__":
    main()
