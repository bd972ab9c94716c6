"""LangChain: FAISS retrieval over SciFact, reranked by `BlockRankRerank` in a ContextualCompressionRetriever.

    python examples/langchain_faiss_rerank.py                 # 10 queries, full corpus (first run embeds it: minutes)
    python examples/langchain_faiss_rerank.py --smoke         # 3 queries, small corpus (CI)

Prints FAISS's and BlockRank's top documents per query and nDCG@10 of both on the same candidates.
Needs langchain-classic for ContextualCompressionRetriever (`pip install "blockrank-rerank[examples]"`).
"""

from typing import Any, Optional, Sequence

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict
from scifact_faiss import (
    FaissIndex,
    SciFact,
    example_arguments,
    load_scifact,
    print_comparison,
    print_summary,
    ranker_settings,
)

from blockrank_rerank import BlockRank
from blockrank_rerank.integrations.langchain import BlockRankRerank


class FaissRetriever(BaseRetriever):
    """The `k` nearest SciFact abstracts as Documents (id = docid, title and cosine score in metadata)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    index: FaissIndex
    data: SciFact
    k: int = 20

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [
            Document(
                id=d,
                page_content=f"{self.data.corpus[d]['title']} {self.data.corpus[d]['text']}".strip(),
                metadata={"title": self.data.corpus[d]["title"], "faiss_score": s},
            )
            for d, s in self.index.search(query, self.k)
        ]


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = example_arguments(__doc__, argv)
    data = load_scifact(args.queries, smoke=args.smoke)
    base = FaissRetriever(index=FaissIndex(data.corpus), data=data, k=args.depth)
    # Loaded once and shared by every query; the compressor only translates Documents to and from it.
    ranker = BlockRank.from_pretrained(args.model, **ranker_settings(args))
    retriever = ContextualCompressionRetriever(
        base_compressor=BlockRankRerank(ranker=ranker, top_n=args.depth), base_retriever=base
    )
    first_stage, reranked = {}, {}
    for qid, query in data.queries.items():
        retrieved = base.invoke(query)
        compressed = retriever.invoke(query)
        first_stage[qid] = [d.id for d in retrieved]
        reranked[qid] = [d.id for d in compressed]
        print_comparison(
            query,
            [(d.id, d.metadata["faiss_score"]) for d in retrieved],
            [(d.id, d.metadata["relevance_score"]) for d in compressed],
            data,
            qid,
        )
    before, after = print_summary(first_stage, reranked, data, args.depth)
    return {"first_stage": first_stage, "reranked": reranked, "ndcg10_first_stage": before, "ndcg10_reranked": after}


if __name__ == "__main__":
    main()
