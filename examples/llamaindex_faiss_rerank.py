"""LlamaIndex: a `FaissVectorStore` index over SciFact embedded by `HuggingFaceEmbedding`, its retriever reranked by
`BlockRankReranker` inside a query engine.

    python examples/llamaindex_faiss_rerank.py                # 10 queries, full corpus (first run embeds it: minutes)
    python examples/llamaindex_faiss_rerank.py --smoke        # 3 queries, small corpus (CI)

Prints FAISS's and BlockRank's top documents per query and nDCG@10 of both on the same candidates.
Needs llama-index-vector-stores-faiss and llama-index-embeddings-huggingface:
`pip install "blockrank-rerank[examples]"`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import faiss
from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers.no_text import NoText
from llama_index.core.schema import TextNode
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from llama_index.vector_stores.faiss import FaissVectorStore
from scifact_common import (
    EMBED_BATCH_SIZE,
    EMBED_DIM,
    SciFact,
    embedding_model_path,
    example_arguments,
    index_cache,
    load_scifact,
    print_comparison,
    print_summary,
    ranker_settings,
)

from blockrank_rerank import BlockRank
from blockrank_rerank.integrations.llamaindex import BlockRankReranker


def embedding_model() -> HuggingFaceEmbedding:
    """all-MiniLM-L6-v2 from its local folder (no hub access); unit-length vectors, so inner product is cosine."""
    return HuggingFaceEmbedding(
        model_name=embedding_model_path(), device="cpu", normalize=True, embed_batch_size=EMBED_BATCH_SIZE
    )


def scifact_nodes(data: SciFact) -> list[TextNode]:
    """One TextNode per abstract (id = docid); its EMBED content, what is embedded and reranked, is "title abstract"."""
    return [
        TextNode(
            id_=docid,
            text=document["text"],
            metadata={"title": document["title"]},
            metadata_template="{value}",
            text_template="{metadata_str} {content}",
        )
        for docid, document in data.corpus.items()
    ]


def build_index(data: SciFact, embed_model: HuggingFaceEmbedding, persist_dir: Optional[Path]) -> VectorStoreIndex:
    """A VectorStoreIndex on an exact inner-product FAISS index; reloaded from `persist_dir` when it was saved there."""
    if persist_dir is not None and (persist_dir / "docstore.json").is_file():
        storage = StorageContext.from_defaults(
            vector_store=FaissVectorStore.from_persist_dir(str(persist_dir)), persist_dir=str(persist_dir)
        )
        return load_index_from_storage(storage, embed_model=embed_model)
    storage = StorageContext.from_defaults(vector_store=FaissVectorStore(faiss_index=faiss.IndexFlatIP(EMBED_DIM)))
    index = VectorStoreIndex(scifact_nodes(data), storage_context=storage, embed_model=embed_model)
    if persist_dir is not None:
        index.storage_context.persist(persist_dir=str(persist_dir))
    return index


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Runs the comparison; returns both stages' rankings (docids per query) and their nDCG@10."""
    args = example_arguments(__doc__, argv)
    data = load_scifact(args.queries, smoke=args.smoke)
    index = build_index(data, embedding_model(), index_cache("llamaindex", data, args.smoke))
    retriever = index.as_retriever(similarity_top_k=args.depth)
    # Loaded once and shared by every query; the adapter only translates nodes to and from it.
    ranker = BlockRank.from_pretrained(args.model, **ranker_settings(args))
    # NoText synthesizer: this script compares rankings only (the notebook generates an answer), so no LLM is called.
    engine = RetrieverQueryEngine(
        retriever,
        response_synthesizer=NoText(llm=MockLLM()),
        node_postprocessors=[BlockRankReranker(ranker=ranker, top_n=args.depth)],
    )
    first_stage, reranked = {}, {}
    for qid, query in data.queries.items():
        retrieved = retriever.retrieve(query)
        response = engine.query(query)
        first_stage[qid] = [n.node.node_id for n in retrieved]
        reranked[qid] = [n.node.node_id for n in response.source_nodes]
        print_comparison(
            query,
            [(n.node.node_id, n.score) for n in retrieved],
            [(n.node.node_id, n.score) for n in response.source_nodes],
            data,
            qid,
        )
    before, after = print_summary(first_stage, reranked, data, args.depth)
    return {"first_stage": first_stage, "reranked": reranked, "ndcg10_first_stage": before, "ndcg10_reranked": after}


if __name__ == "__main__":
    main()
