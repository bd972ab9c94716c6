"""GPU kernels for BlockRank (Triton). `triton_available()` is a side-effect-free capability probe."""

from __future__ import annotations

import importlib.util


def triton_available() -> bool:
    """True when the `triton` package can be imported (kernels run on CUDA, or on CPU under TRITON_INTERPRET=1)."""
    return importlib.util.find_spec("triton") is not None


__all__ = ["triton_available"]
