"""BlockRank reranking: blockwise in-context ranking read off a causal LM's attention at a middle layer."""

import logging

from .config import BlockRankConfig, default_scoring_layer
from .loading import EMBEDDED_DEFAULT
from .reranker import BlockRank
from .results import RankedDocument, RankedList

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"
__all__ = ["BlockRank", "BlockRankConfig", "RankedDocument", "RankedList", "EMBEDDED_DEFAULT", "default_scoring_layer"]
