"""The `blockrank` command line: `rerank` (documents from JSONL/TSV or stdin to ranked JSONL) and `demo`."""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from .config import BlockRankConfig


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose and configure the model; every one maps to a BlockRankConfig field."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, help="Hugging Face id or local path (default: embedded SmolLM2-135M-Instruct)")
    group.add_argument("--scoring-layer", type=int, default=None, help="L*, 0-based layer whose attention is read")
    group.add_argument("--num-signal-tokens", type=int, default=None, help="last query-block tokens read (default 2)")
    group.add_argument("--query-position-offset", type=int, default=None, help="first position id of the query block (default 16384)")
    group.add_argument("--max-block-tokens", type=int, default=None, help="token cap per block (default 384)")
    group.add_argument("--scoring-mode", choices=["blockrank", "full"], default=None, help="block-sparse (default) or full causal attention")
    group.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    group.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = ["scoring_layer", "num_signal_tokens", "query_position_offset", "max_block_tokens", "scoring_mode", "dtype", "device"]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def read_documents(stream: TextIO, fmt: str) -> list[Any]:
    """Documents from JSONL (a JSON string or an object with "text"/"content" per line) or TSV (`id<TAB>text` or `text`)."""
    documents: list[Any] = []
    for number, line in enumerate(stream, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if fmt == "jsonl":
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"line {number} is not valid JSON: {error.msg}") from None
            if not isinstance(item, (str, dict)):
                raise ValueError(f"line {number}: expected a JSON string or object, got {type(item).__name__}")
            documents.append(item)
        else:
            docid, sep, text = line.partition("\t")
            documents.append({"id": docid, "text": text} if sep else line)
    return documents


def open_text(path: str) -> TextIO:
    """A file (or stdin for "-") decoded as UTF-8; undecodable bytes become U+FFFD with a warning."""
    raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    try:
        return io.StringIO(raw.decode("utf-8"))
    except UnicodeDecodeError:
        warnings.warn(f"{path}: not valid UTF-8; undecodable bytes replaced with U+FFFD", stacklevel=2)
        return io.StringIO(raw.decode("utf-8", errors="replace"))


def command_rerank(args: argparse.Namespace) -> int:
    from .reranker import BlockRank

    fmt = args.format or ("tsv" if str(args.input).endswith((".tsv", ".txt")) else "jsonl")
    documents = read_documents(open_text(args.input), fmt)
    ranker = BlockRank.from_pretrained(args.model, **config_overrides(args))
    result = ranker.rerank(args.query, documents, top_k=args.top_k)
    for item in result.to_dicts():
        if not args.with_text:
            item.pop("text")
        if not item["metadata"]:
            item.pop("metadata")
        print(json.dumps(item, ensure_ascii=False))
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.model, num_queries=args.queries, depth=args.depth, shown=args.shown, builtin=args.builtin)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blockrank", description="BlockRank reranking with causal LMs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    rerank = commands.add_parser("rerank", help="rerank documents for one query, print ranked JSONL")
    rerank.add_argument("--query", "-q", required=True)
    rerank.add_argument("--input", "-i", default="-", help="JSONL or TSV file of documents, - for stdin (default)")
    rerank.add_argument("--format", choices=["jsonl", "tsv"], default=None, help="default: from the file extension, else jsonl")
    rerank.add_argument("--top-k", type=int, default=None)
    rerank.add_argument("--with-text", action="store_true", help="include each document's text in the output")
    add_model_arguments(rerank)
    rerank.set_defaults(handler=command_rerank)

    demo = commands.add_parser("demo", help="rerank DL19 BM25 candidates (or a built-in corpus) and print tables")
    demo.add_argument("--model", default=None)
    demo.add_argument("--queries", type=int, default=3, help="DL19 queries to show")
    demo.add_argument("--depth", type=int, default=20, help="BM25 candidates per query")
    demo.add_argument("--shown", type=int, default=10, help="rows printed per query")
    demo.add_argument("--builtin", action="store_true", help="use the built-in corpus even when the data is present")
    demo.set_defaults(handler=command_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as error:
        print(f"blockrank: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
