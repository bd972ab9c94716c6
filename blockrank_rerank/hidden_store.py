"""Where the chunked path keeps the document hidden states of the current layer: in memory, or in a temporary file.

Both stores hold a (rows, C) matrix in the compute dtype and are read and overwritten a row range at a
time. `FileStore` keeps nothing resident: rows go through plain reads and writes of an unlinked temporary
file (no memory map), so its pages count towards the page cache, never towards the process's memory.
"""

from __future__ import annotations

import tempfile
from typing import Optional, Protocol

import torch


class HiddenStore(Protocol):
    """A (rows, C) matrix read and written by row ranges."""

    def read(self, start: int, stop: int) -> torch.Tensor: ...

    def write(self, start: int, rows: torch.Tensor) -> None: ...

    def close(self) -> None: ...


class MemoryStore:
    """The matrix as one tensor on the compute device."""

    def __init__(self, rows: int, width: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.data = torch.empty(rows, width, dtype=dtype, device=device)

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop-1 (a view). Shapes: -> (stop - start, C)."""
        return self.data[start:stop]

    def write(self, start: int, rows: torch.Tensor) -> None:
        """Overwrite rows from `start` on. Shapes: rows (R, C)."""
        self.data[start : start + rows.shape[0]] = rows

    def close(self) -> None:
        self.data = torch.empty(0)


class FileStore:
    """The matrix in an unlinked temporary file (in `directory`, default the system temp dir), rows copied to
    `device` on read."""

    def __init__(
        self, rows: int, width: int, dtype: torch.dtype, device: torch.device | str, directory: Optional[str] = None
    ) -> None:
        self.width, self.dtype, self.device = width, dtype, torch.device(device)
        self.row_bytes = width * torch.empty(0, dtype=dtype).element_size()
        self._file = tempfile.TemporaryFile(dir=directory)
        self._file.truncate(rows * self.row_bytes)

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop-1 (a copy on the store's device). Shapes: -> (stop - start, C)."""
        buffer = bytearray((stop - start) * self.row_bytes)
        self._file.seek(start * self.row_bytes)
        if self._file.readinto(buffer) != len(buffer):
            raise OSError(f"short read from the hidden-state file at row {start}")
        rows = torch.frombuffer(buffer, dtype=self.dtype).view(stop - start, self.width)  # (bytes,) -> (rows, C)
        return rows.to(self.device)

    def write(self, start: int, rows: torch.Tensor) -> None:
        """Overwrite rows from `start` on (copied to the CPU). Shapes: rows (R, C)."""
        raw = (
            rows.detach().to("cpu", self.dtype).contiguous().view(torch.uint8).flatten().numpy()
        )  # (rows, C) -> (rows * C * bytes,)
        self._file.seek(start * self.row_bytes)
        self._file.write(memoryview(raw))

    def close(self) -> None:
        self._file.close()


__all__ = ["FileStore", "HiddenStore", "MemoryStore"]
