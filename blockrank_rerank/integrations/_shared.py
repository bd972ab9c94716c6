"""What the three adapters share: one `BlockRank` per (model, config), loaded once and reused.

Adapters hold no ranking logic. Each either wraps a `BlockRank` the caller built, or asks `shared_ranker`
for one by model name and config fields; the same (model, config) pair then gives back the same object
for as long as something holds it, so a pipeline rebuilt from YAML, or a second adapter, never reloads.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from typing import Any, Mapping, Optional

from blockrank_rerank.config import BlockRankConfig
from blockrank_rerank.loading import EMBEDDED_DEFAULT, model_settings, require_available
from blockrank_rerank.reranker import BlockRank

_rankers: "weakref.WeakValueDictionary[tuple[str, BlockRankConfig], BlockRank]" = weakref.WeakValueDictionary()
_lock = threading.Lock()


def missing_framework(package: str, extra: str) -> ImportError:
    """The error an adapter raises when its framework is not installed: it names the extra to install."""
    return ImportError(
        f'blockrank_rerank.integrations.{extra} needs {package}: pip install "blockrank-rerank[{extra}]"'
    )


def resolve_config(
    model: Optional[str],
    scoring_mode: Optional[str],
    config: Optional[Mapping[str, Any]],
    device: Optional[str] = None,
) -> BlockRankConfig:
    """The validated config for `model`: released-checkpoint settings, then `config` fields, then `scoring_mode`
    and `device` (the adapters' own arguments; a different `config["device"]` beside `device` is ambiguous)."""
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping of BlockRankConfig fields, got {type(config).__name__}")
    fields = {**model_settings(model), **(config or {})}
    if scoring_mode is not None:
        fields["scoring_mode"] = scoring_mode
    if device is not None:
        if (config or {}).get("device", device) != device:
            raise ValueError(f"device={device!r} but config['device']={config['device']!r}: pass one of them")
        fields["device"] = device
    return BlockRankConfig(**fields)


def check_model_available(model: Optional[str]) -> None:
    """Fail at an adapter's construction, not at its first query, on a model that cannot load here (an unknown
    embedded name; with the hub offline, a name neither local nor cached; online, an id the Hugging Face Hub says
    does not exist). A hub that cannot be reached leaves the verdict to the load."""
    if model is not None:
        require_available(str(model), "model=")


def shared_ranker(model: Optional[str], config: BlockRankConfig) -> BlockRank:
    """The `BlockRank` for (`model`, `config`), loaded on first use and shared while anything holds it."""
    key = (model or EMBEDDED_DEFAULT, config)
    with _lock:
        ranker = _rankers.get(key)
        if ranker is None:
            ranker = BlockRank.from_pretrained(model, config=config)
            _rankers[key] = ranker
        return ranker


def register(ranker: BlockRank) -> None:
    """Make a caller-built ranker the shared one for its (name, config), so rebuilt adapters reuse it."""
    if not isinstance(ranker, BlockRank):
        raise TypeError(f"ranker must be a blockrank_rerank.BlockRank, got {type(ranker).__name__}")
    with _lock:
        _rankers.setdefault((ranker.engine.name, ranker.config), ranker)


def check_ranker_arguments(
    ranker: Optional[BlockRank],
    model: Optional[str],
    scoring_mode: Optional[str],
    config: Any,
    device: Optional[str] = None,
) -> None:
    """A ready `ranker` already fixes model, config and device: passing both is ambiguous."""
    if ranker is not None and (model is not None or scoring_mode is not None or config or device is not None):
        raise ValueError("pass either ranker= or model=/scoring_mode=/config=/device=, not both")
    if ranker is not None:
        register(ranker)


def config_fields(config: BlockRankConfig) -> dict[str, Any]:
    """Every field of `config` as plain values, for serialising an adapter that wraps a caller's ranker."""
    return {
        **dataclasses.asdict(config),
        "head_weights": config.head_weights_dict(),
        "relevance_calibration": list(config.relevance_calibration),  # a list, as JSON and YAML store it
    }
