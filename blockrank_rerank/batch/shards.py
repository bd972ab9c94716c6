"""The output directory of a batch job: a manifest, one file per finished shard, and the merged results.

Layout of `OUTPUT/`:
    manifest.json            what the job is (input fingerprint, shard size, model, settings); a rerun must match it
    shards/shard-000000.jsonl one record per query of shard 0, written whole or not at all (temp file + rename)
    results.jsonl, run.trec  every shard merged in input order, written once all shards are complete
    summary.json             the last run's counts and timings

A shard file exists only once complete, so a killed job loses at most the shards in flight; a rerun skips
every shard whose file exists and checks that it holds exactly its queries, so no query is missed or repeated.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .inputs import BatchQuery
from .records import ShardResult, record_line, trec_lines

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Shard:
    """Consecutive queries of the input, numbered from 0; the unit that is written, skipped or redone."""

    index: int
    queries: tuple[BatchQuery, ...]

    @property
    def qids(self) -> list[str]:
        """The shard's query ids in input order."""
        return [q.qid for q in self.queries]


def plan_shards(queries: Sequence[BatchQuery], shard_size: int) -> list[Shard]:
    """`queries` cut into shards of `shard_size` in input order (the last may be shorter)."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}")
    return [
        Shard(number, tuple(queries[start : start + shard_size]))
        for number, start in enumerate(range(0, len(queries), shard_size))
    ]


def write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write `lines` to `path` through a temp file in the same directory, fsynced, then renamed over `path`."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class OutputDirectory:
    """The files of one job under `root`; see the module doc for the layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.shards_dir = self.root / "shards"
        self.manifest_path = self.root / "manifest.json"
        self.results_path = self.root / "results.jsonl"
        self.run_path = self.root / "run.trec"
        self.summary_path = self.root / "summary.json"

    def prepare(self, manifest: dict[str, Any]) -> None:
        """Create the directory for `manifest`'s job, or check that it already holds that job; clear stale temps.

        ValueError when the directory holds another job (other input, shard size, model or settings): mixing
        shards of two jobs would give results that neither would.
        """
        manifest = {"version": MANIFEST_VERSION, **manifest}
        if self.manifest_path.exists():
            try:
                found = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            except ValueError:
                raise ValueError(f"{self.manifest_path} is not valid JSON; use another --output") from None
            differing = sorted(k for k in manifest.keys() | found.keys() if manifest.get(k) != found.get(k))
            if differing:
                detail = "; ".join(f"{k}: {found.get(k)!r} there, {manifest.get(k)!r} now" for k in differing)
                raise ValueError(
                    f"{self.root} holds another job ({detail}); use another --output, or delete it to start over"
                )
        elif self.root.exists() and any(self.root.iterdir()):
            raise ValueError(f"{self.root} exists and is not a batch-rerank output directory; use another --output")
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        if not self.manifest_path.exists():
            write_atomic(self.manifest_path, [json.dumps(manifest, indent=2, sort_keys=True) + "\n"])
        for stale in list(self.shards_dir.glob(".*.tmp")) + list(self.root.glob(".*.tmp")):
            stale.unlink(missing_ok=True)  # a killed run's half-written file: never read, safe to drop

    def shard_path(self, index: int) -> Path:
        """Where shard `index` is written."""
        return self.shards_dir / f"shard-{index:06d}.jsonl"

    def read_shard(self, shard: Shard) -> list[dict[str, Any]]:
        """The records of a complete shard; ValueError when its file holds other queries than the shard's."""
        path = self.shard_path(shard.index)
        with open(path, encoding="utf-8") as lines:
            try:
                records = [json.loads(line) for line in lines if line.strip()]
            except ValueError:
                raise ValueError(f"{path} is not valid JSONL; delete it to redo the shard") from None
        found = [r.get("qid") if isinstance(r, dict) else None for r in records]
        if found != shard.qids:
            raise ValueError(f"{path} holds other queries than shard {shard.index}; delete it to redo the shard")
        return records

    def is_complete(self, shard: Shard) -> bool:
        """Whether the shard's file exists and holds exactly its queries (else ValueError, see `read_shard`)."""
        if not self.shard_path(shard.index).exists():
            return False
        self.read_shard(shard)
        return True

    def write_shard(self, shard: Shard, result: ShardResult) -> None:
        """Write a finished shard atomically, after checking that the engine returned exactly its queries."""
        found = [record["qid"] for record in result.records]
        if result.shard != shard.index or found != shard.qids:
            raise RuntimeError(f"shard {shard.index}: the engine returned queries {found}, expected {shard.qids}")
        write_atomic(self.shard_path(shard.index), [record_line(record) for record in result.records])

    def merge(self, shards: Sequence[Shard]) -> None:
        """Write results.jsonl and run.trec from every shard, in input order (each file atomically)."""

        def records() -> Iterator[dict[str, Any]]:
            for shard in shards:  # one shard in memory at a time
                yield from self.read_shard(shard)

        write_atomic(self.results_path, (record_line(record) for record in records()))
        write_atomic(self.run_path, (line for record in records() for line in trec_lines(record)))

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write summary.json atomically."""
        write_atomic(self.summary_path, [json.dumps(summary, indent=2) + "\n"])
