"""Warnings that point at the user's line, however deep in this library and the frameworks the cause lies.

A fixed `stacklevel` is right for one entry point only: the same truncation warning is reached from `rerank`,
`rerank_batch`, `score`, three adapters and the frameworks' own pipelines. `warn_at_caller` walks the stack to
the first frame outside this package and outside the frameworks whose adapters call it.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

PACKAGE_DIR = str(Path(__file__).resolve().parent)
# frameworks between the user's line and our adapters (their pipelines and postprocessor plumbing)
FRAMEWORK_MODULES = (
    "llama_index.",
    "llama_index_instrumentation.",
    "langchain_core.",
    "langchain.",
    "langchain_classic.",
    "haystack.",
    "pydantic.",
)


def caller_stacklevel() -> int:
    """The `stacklevel` (for a `warnings.warn` called from the function that calls this) of the first frame
    outside this package and the frameworks, or the outermost frame when every frame is inside."""
    frame = sys._getframe(2)  # the frame that called warn_at_caller's caller, i.e. stacklevel 1 of warnings.warn
    level = 1
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        inside = frame.f_code.co_filename.startswith(PACKAGE_DIR) or module.startswith(FRAMEWORK_MODULES)
        if not inside and not module.startswith("asyncio"):
            return level
        frame = frame.f_back
        level += 1
    return level - 1


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn(message)` attributed to the user's line (see `caller_stacklevel`)."""
    warnings.warn(message, category, stacklevel=caller_stacklevel() + 1)


__all__ = ["warn_at_caller"]
