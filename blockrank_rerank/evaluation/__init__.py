"""The evaluation harness (extra `[eval]`): datasets, metrics, baselines, the layer sweep and the demo.

Nothing in the reranking core imports this package: `import blockrank_rerank` pulls in no evaluation code.
The method and dataset names below need no evaluation dependency (the CLI builds its choices from them).
"""

from __future__ import annotations

from ..modes import SCORING_MODES

DATASETS = ("dl19", "dl21", "scifact", "scifact-train", "scifact-dev")
REPORTING_DATASETS = ("dl19", "scifact")  # reported, never used to choose anything (heads, layers, settings)
DEV_DATASETS = tuple(name for name in DATASETS if name not in REPORTING_DATASETS)
BASELINE_METHODS = ("pointwise", "listwise", "biencoder", "first-stage")
METHODS = (*SCORING_MODES, *BASELINE_METHODS)  # what `blockrank eval --method` accepts

__all__ = ["BASELINE_METHODS", "DATASETS", "DEV_DATASETS", "METHODS", "REPORTING_DATASETS"]
