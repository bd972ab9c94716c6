"""Reading and checking `blockrank.json`, the record `blockrank train` writes beside a checkpoint.

A record is untrusted input: every problem is a `ValueError` that names the file, before any weight is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import MODEL_SETTINGS, BlockRankConfig

CHECKPOINT_FORMATS = ("blockrank-checkpoint/1",)
CHECKPOINT_KINDS = ("lora", "full")
MAX_RECORD_BYTES = 16 * 2**20  # a record is a few KB; a larger file is not one


def read_record(path: Path) -> dict[str, Any]:
    """The checked record in `path` (a `blockrank.json`), with `path` (its directory) added and `base_model`
    resolved."""
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise ValueError(
            f"{path}: {path.stat().st_size} bytes is too large for a checkpoint record (at most {MAX_RECORD_BYTES})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path}: not valid UTF-8 JSON: {error}") from None
    return check_record(data, path)


def check_record(data: Any, path: Path) -> dict[str, Any]:
    """`data` read from `path` checked key by key; unknown top-level keys are kept."""
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a checkpoint record must be a JSON object, got {type(data).__name__}")
    if "format" in data and data["format"] not in CHECKPOINT_FORMATS:
        raise ValueError(f"{path}: unknown format {data['format']!r}; this version reads {CHECKPOINT_FORMATS}")
    training = data.get("training", {})
    if not isinstance(training, dict):
        raise ValueError(f"{path}: 'training' must be an object, got {type(training).__name__}")
    kind = record_kind(data, path)
    record = {
        **data,
        "kind": kind,
        "training": training,
        "settings": record_settings(data, training, path),
        "path": str(path.parent),
    }
    record["base_model"] = base_model(data.get("base_model"), path) if kind == "lora" else None
    return record


def record_kind(data: dict[str, Any], path: Path) -> str:
    """'lora' or 'full'; a record without `kind` is a full model, unless it names a base model (then it is
    ambiguous)."""
    kind = data.get("kind")
    if kind is None and data.get("base_model") is not None:
        raise ValueError(
            f'{path}: names a base_model but no \'kind\'; set "kind": "lora" for an adapter over that base'
        )
    kind = "full" if kind is None else kind
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"{path}: 'kind' must be one of {CHECKPOINT_KINDS}, got {kind!r}")
    if kind == "full" and data.get("base_model") is not None:
        raise ValueError(
            f"{path}: a full checkpoint has no base_model (got {data['base_model']!r}); "
            'use "kind": "lora" for an adapter'
        )
    return kind


def record_settings(data: dict[str, Any], training: dict[str, Any], path: Path) -> dict[str, Any]:
    """The model settings of a record, checked as BlockRankConfig checks them; only facts about the model are
    allowed."""
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: 'settings' must be an object, got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(MODEL_SETTINGS))
    if unknown:
        raise ValueError(f"{path}: 'settings' may hold only {MODEL_SETTINGS} (facts about the model), not {unknown}")
    settings = dict(settings)
    if "max_block_tokens" not in settings and "max_block_tokens" in training:
        settings["max_block_tokens"] = training["max_block_tokens"]  # records written before settings carried it
    try:
        BlockRankConfig(**settings)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: bad settings: {error}") from None
    return settings


def base_model(value: Any, path: Path) -> str:
    """The base model a LoRA record names: a relative path is taken from the checkpoint's directory when it
    exists there."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}: a lora checkpoint needs 'base_model', a model id or path, got {value!r}")
    if value.startswith("embedded:"):
        from .loading import EMBEDDED_BASE, EMBEDDED_TRAINED

        if value not in (EMBEDDED_BASE, EMBEDDED_TRAINED):
            raise ValueError(
                f"{path}: unknown embedded base_model {value!r}; known: {EMBEDDED_BASE}, {EMBEDDED_TRAINED}"
            )
        return value
    directory = path.parent.resolve()
    beside = None if Path(value).is_absolute() else existing_path(directory / value)
    resolved = beside or existing_path(Path(value))
    if resolved == directory:
        raise ValueError(
            f"{path}: base_model {value!r} is this checkpoint itself; name the model the adapter was trained on"
        )
    return str(resolved) if resolved else value


def existing_path(path: Path) -> Path | None:
    """`path` resolved when it exists, else None (a name too long or malformed for a path is not one)."""
    try:
        path = path.expanduser()
        return path.resolve() if path.exists() else None
    except (OSError, RuntimeError, ValueError):  # RuntimeError: `~user` of an unknown user
        return None
