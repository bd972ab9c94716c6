"""LangChain: a `FAISS` vector store over SciFact embedded by `HuggingFaceEmbeddings`, its retriever reranked by
`BlockRankRerank` in a ContextualCompressionRetriever.

    python examples/langchain_faiss_rerank.py                 # 10 queries, full corpus (first run embeds it: minutes)
    python examples/langchain_faiss_rerank.py --smoke         # 3 queries, small corpus (CI)

Prints FAISS's and BlockRank's top documents per query and nDCG@10 of both on the same candidates.
Needs langchain-community (FAISS), langchain-huggingface and langchain-classic (ContextualCompressionRetriever):
`pip install "blockrank-rerank[examples]"`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_community.vectorstores import FAISS
from langchain_community.vectorstores.utils import DistanceStrategy
from langchain_core.documents import Document
from langchain_huggingface import HuggingFaceEmbeddings
from scifact_common import (
    EMBED_BATCH_SIZE,
    SciFact,
    document_text,
    embedding_model_path,
    example_arguments,
    index_cache,
    load_scifact,
    print_comparison,
    print_summary,
    ranker_settings,
)

from blockrank_rerank import BlockRank
from blockrank_rerank.integrations.langchain import BlockRankRerank


def embedding_model() -> HuggingFaceEmbeddings:
    """all-MiniLM-L6-v2 from its local folder (no hub access); unit-length vectors, so inner product is cosine."""
    return HuggingFaceEmbeddings(
        model_name=embedding_model_path(),
        model_kwargs={"device": "cpu"},
        encode_kwargs={"normalize_embeddings": True, "batch_size": EMBED_BATCH_SIZE},
    )


def scifact_documents(data: SciFact) -> list[Document]:
    """One Document per abstract (id = docid); `page_content`, what is embedded and reranked, is "title abstract"."""
    return [
        Document(id=docid, page_content=document_text(document), metadata={"title": document["title"]})
        for docid, document in data.corpus.items()
    ]


def build_store(data: SciFact, embeddings: HuggingFaceEmbeddings, folder: Optional[Path]) -> FAISS:
    """An exact inner-product FAISS store; reloaded from `folder` when this script saved it there."""
    if folder is not None and (folder / "index.faiss").is_file():
        # load_local unpickles the docstore, so it must be asked for: the folder is one this script wrote.
        return FAISS.load_local(
            str(folder),
            embeddings,
            allow_dangerous_deserialization=True,
            distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
        )
    store = FAISS.from_documents(
        scifact_documents(data), embeddings, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT
    )
    if folder is not None:
        store.save_local(str(folder))
    return store


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Runs the comparison; returns both stages' rankings (docids per query) and their nDCG@10."""
    args = example_arguments(__doc__, argv)
    data = load_scifact(args.queries, smoke=args.smoke)
    store = build_store(data, embedding_model(), index_cache("langchain", data, args.smoke))
    # Loaded once and shared by every query; the compressor only translates Documents to and from it.
    ranker = BlockRank.from_pretrained(args.model, **ranker_settings(args))
    retriever = ContextualCompressionRetriever(
        base_compressor=BlockRankRerank(ranker=ranker, top_n=args.depth),
        base_retriever=store.as_retriever(search_kwargs={"k": args.depth}),
    )
    first_stage, reranked = {}, {}
    for qid, query in data.queries.items():
        retrieved = store.similarity_search_with_score(query, k=args.depth)  # what the base retriever returns, scored
        compressed = retriever.invoke(query)
        first_stage[qid] = [d.id for d, _ in retrieved]
        reranked[qid] = [d.id for d in compressed]
        print_comparison(
            query,
            [(d.id, float(s)) for d, s in retrieved],
            [(d.id, d.metadata["relevance_score"]) for d in compressed],
            data,
            qid,
        )
    before, after = print_summary(first_stage, reranked, data, args.depth)
    return {"first_stage": first_stage, "reranked": reranked, "ndcg10_first_stage": before, "ndcg10_reranked": after}


if __name__ == "__main__":
    main()
