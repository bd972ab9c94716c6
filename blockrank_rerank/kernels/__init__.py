"""GPU kernels for BlockRank (Triton). The probes here are side-effect free: they never import triton.

Kernels: `block_attention` (fused block-sparse attention over the packed stream) and `score_readout`
(the layer-L* document scores with an online log-sum-exp merge). Import them from their modules.
"""

from __future__ import annotations

import importlib.util
import os

_TRUE = {"1", "true", "on", "yes", "y"}


def triton_available() -> bool:
    """True when the `triton` package can be imported (kernels run on CUDA, or on CPU under TRITON_INTERPRET=1)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreting() -> bool:
    """True when TRITON_INTERPRET is set, so Triton kernels run on CPU tensors through its interpreter."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE


__all__ = ["triton_available", "triton_interpreting"]
