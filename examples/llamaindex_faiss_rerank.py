"""LlamaIndex: FAISS retrieval over SciFact, reranked by `BlockRankReranker` inside a query engine.

    python examples/llamaindex_faiss_rerank.py                # 10 queries, full corpus (first run embeds it: minutes)
    python examples/llamaindex_faiss_rerank.py --smoke        # 3 queries, small corpus (CI)

Prints FAISS's and BlockRank's top documents per query and nDCG@10 of both on the same candidates.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers.no_text import NoText
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
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
from blockrank_rerank.integrations.llamaindex import BlockRankReranker


class FaissRetriever(BaseRetriever):
    """The `k` nearest SciFact abstracts as TextNodes (id = docid, title in metadata), scored by cosine."""

    def __init__(self, index: FaissIndex, data: SciFact, k: int) -> None:
        super().__init__()
        self.index, self.k = index, k
        self.nodes = {
            d: TextNode(id_=d, text=doc["text"], metadata={"title": doc["title"]}) for d, doc in data.corpus.items()
        }

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [
            NodeWithScore(node=self.nodes[d], score=s) for d, s in self.index.search(query_bundle.query_str, self.k)
        ]


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = example_arguments(__doc__, argv)
    data = load_scifact(args.queries, smoke=args.smoke)
    retriever = FaissRetriever(FaissIndex(data.corpus), data, k=args.depth)
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
