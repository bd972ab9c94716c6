"""Haystack: the pipeline in `haystack_pipeline.yaml` (BlockRankRanker -> PromptBuilder) fed by Haystack's own first
stage: a `SentenceTransformersTextEmbedder` and an `InMemoryEmbeddingRetriever` over SciFact documents embedded by
`SentenceTransformersDocumentEmbedder` (the sentence-transformers-haystack package; Haystack 3 moved them out of core).

    python examples/haystack_faiss_rerank.py                  # 10 queries, full corpus (first run embeds it: minutes)
    python examples/haystack_faiss_rerank.py --smoke          # 3 queries, small corpus (CI)

Prints the first stage's and BlockRank's top documents per query and nDCG@10 of both on the same candidates.
The store is Haystack's in-memory one, searched exactly by inner product over unit vectors (cosine, the ranking a
flat FAISS index gives): faiss-haystack, Haystack's FAISS store, requires numpy<2 on Python < 3.13, which would pull
numpy back a major version under everything else installed (docs/integrations.md, "Examples").
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import ComponentDevice
from haystack_integrations.components.embedders.sentence_transformers import (
    SentenceTransformersDocumentEmbedder,
    SentenceTransformersTextEmbedder,
)
from scifact_common import (
    EMBED_BATCH_SIZE,
    SciFact,
    embedding_model_path,
    example_arguments,
    index_cache,
    load_scifact,
    print_comparison,
    print_summary,
    ranker_settings,
)

PIPELINE_YAML = Path(__file__).with_name("haystack_pipeline.yaml")
TRUSTED_MODULES = ["blockrank_rerank"]  # Haystack 3 deserialises classes only from allowlisted modules
FIRST_STAGE = "In-memory"  # the first stage's name in the printout
# The embedders' settings: all-MiniLM-L6-v2 from its local folder, unit vectors, the same batches as the other examples.
EMBEDDER_SETTINGS: Dict[str, Any] = {
    "device": ComponentDevice.from_str("cpu"),
    "batch_size": EMBED_BATCH_SIZE,
    "normalize_embeddings": True,
    "local_files_only": True,
    "progress_bar": False,
}


def load_pipeline(data: Dict[str, Any]) -> Pipeline:
    """`Pipeline.from_dict` trusting blockrank_rerank on Haystack 3 (which has `allowed_modules`); Haystack 2
    needs no allowlist."""
    if "allowed_modules" in inspect.signature(Pipeline.from_dict).parameters:
        return Pipeline.from_dict(data, allowed_modules=TRUSTED_MODULES)
    return Pipeline.from_dict(data)


def build_document_store(data: SciFact, path: Optional[Path]) -> InMemoryDocumentStore:
    """SciFact Documents (id = docid, title in meta) with embeddings of "title abstract", by dot product; reloaded
    from `path` when this script saved the store there."""
    if path is not None and path.is_file():
        return InMemoryDocumentStore.load_from_disk(str(path))
    embedder = SentenceTransformersDocumentEmbedder(
        model=embedding_model_path(), meta_fields_to_embed=["title"], embedding_separator=" ", **EMBEDDER_SETTINGS
    )
    embedder.warm_up()
    documents = [Document(id=d, content=doc["text"], meta={"title": doc["title"]}) for d, doc in data.corpus.items()]
    store = InMemoryDocumentStore(embedding_similarity_function="dot_product")
    store.write_documents(embedder.run(documents)["documents"])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        store.save_to_disk(str(path))
    return store


def build_pipeline(store: InMemoryDocumentStore, args: argparse.Namespace) -> Pipeline:
    """The YAML pipeline with the ranker's options from `args`, and the query embedder and retriever in front."""
    spec = yaml.safe_load(PIPELINE_YAML.read_text(encoding="utf-8"))
    ranker = spec["components"]["ranker"]["init_parameters"]
    settings = ranker_settings(args)
    ranker["model"], ranker["scoring_mode"] = args.model, settings.pop("scoring_mode")
    ranker["config"] = {**ranker["config"], **settings}
    pipeline = load_pipeline(spec)
    pipeline.add_component(
        "embedder", SentenceTransformersTextEmbedder(model=embedding_model_path(), **EMBEDDER_SETTINGS)
    )
    pipeline.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store, top_k=args.depth))
    pipeline.connect("embedder.embedding", "retriever.query_embedding")
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def pipeline_inputs(query: str, top_k: int) -> Dict[str, Dict[str, Any]]:
    """What one run of the pipeline takes: the query for the embedder, the ranker and the prompt builder."""
    return {"embedder": {"text": query}, "ranker": {"query": query, "top_k": top_k}, "prompt_builder": {"query": query}}


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Runs the comparison; returns both stages' rankings (docids per query) and their nDCG@10."""
    args = example_arguments(__doc__, argv)
    data = load_scifact(args.queries, smoke=args.smoke)
    cache = index_cache("haystack", data, args.smoke)
    pipeline = build_pipeline(build_document_store(data, None if cache is None else cache / "store.json"), args)
    pipeline.warm_up()  # loads the models once; every run below reuses them
    first_stage, reranked = {}, {}
    for qid, query in data.queries.items():
        result = pipeline.run(pipeline_inputs(query, args.depth), include_outputs_from={"retriever", "ranker"})
        retrieved, ranked = result["retriever"]["documents"], result["ranker"]["documents"]
        first_stage[qid] = [d.id for d in retrieved]
        reranked[qid] = [d.id for d in ranked]
        print_comparison(
            query,
            [(d.id, d.score) for d in retrieved],
            [(d.id, d.score) for d in ranked],
            data,
            qid,
            first_stage_name=f"{FIRST_STAGE} (cosine)",
        )
    before, after = print_summary(first_stage, reranked, data, args.depth, first_stage_name=FIRST_STAGE)
    return {"first_stage": first_stage, "reranked": reranked, "ndcg10_first_stage": before, "ndcg10_reranked": after}


if __name__ == "__main__":
    main()
