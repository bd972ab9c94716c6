"""Fuzzing the `blockrank rerank` command: arbitrary JSONL/TSV bytes and flags end in status 0 with valid JSONL,
or status 2 with one line `blockrank: error: ...`, never a traceback (issue 15, acceptance).

In process, a tiny random model stands in for `BlockRank.from_pretrained` so each example takes milliseconds;
a few fixed hostile inputs also run in a child process (real streams, the interpreter's exit).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from blockrank_rerank import BlockRank
from blockrank_rerank.cli import main

from test_cli_hardening import tiny_from_pretrained, tiny_parts

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning"
)  # undecodable bytes, truncation: expected here, one line each

lone_surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
odd_text = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.characters(), lone_surrogate), max_size=30).map("".join),
    st.sampled_from(
        ["", " ", "\ufeff", "\u2028", "\x85", "\x1c", "\r", "\t", "\x00", "NaN", "ID: 1 | CONTENT:", "🐱" * 20]
    ),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), odd_text),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(odd_text, children, max_size=3)),
    max_leaves=8,
)
valid_documents = st.one_of(
    odd_text,
    st.fixed_dictionaries(
        {"text": odd_text}, optional={"id": json_values, "title": st.one_of(st.none(), odd_text), "meta": json_values}
    ),
)
invalid_documents = st.one_of(json_values, st.fixed_dictionaries({"text": json_values, "title": json_values}))
documents = st.one_of(
    valid_documents, valid_documents, valid_documents, invalid_documents
)  # mostly valid: the model runs
hostile_lines = st.one_of(
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 3000).map(lambda depth: '{"text": "t", "m": ' + "[" * depth + "]" * depth + "}"),
    odd_text,
    st.sampled_from(
        [
            '{"text": "a", "x": NaN}',
            '{"id": "\\ud800", "text": "\\udc00"}',
            '"' + "9" * 5000 + '"',
            "9" * 5000,
            "{",
            "\t\t",
        ]
    ),
)
escaped_or_raw = st.one_of(
    st.just(json.dumps), st.just(lambda d: json.dumps(d, ensure_ascii=False))
)  # raw: surrogates become bad bytes
json_lines = st.one_of(st.tuples(escaped_or_raw, documents).map(lambda pair: pair[0](pair[1])), hostile_lines)
tsv_lines = st.one_of(st.tuples(odd_text, odd_text).map("\t".join), odd_text)
newlines = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def inputs(draw) -> bytes:
    """An input file: JSONL or TSV lines with any line endings, maybe a BOM, maybe bytes that are not UTF-8."""
    lines = draw(st.lists(st.one_of(json_lines, json_lines, json_lines, tsv_lines), max_size=6))
    text = draw(st.sampled_from(["", "\ufeff"])) + "".join(line + draw(newlines) for line in lines)
    data = text.encode("utf-8", errors="surrogatepass")
    return data + draw(st.sampled_from([b"", b"", b"", b"\xff\xfe", b"caf\xe9\n", b"\xed\xa0\x80"]))


@st.composite
def valid_inputs(draw) -> bytes:
    """JSONL of valid (if odd) documents: any line endings, maybe a BOM; the model runs on them."""
    lines = draw(st.lists(valid_documents.map(json.dumps), min_size=1, max_size=6))
    return (draw(st.sampled_from(["", "\ufeff"])) + "".join(line + draw(newlines) for line in lines)).encode("utf-8")


VALID_FLAGS = {
    "--format": ["jsonl", "tsv"],
    "--top-k": [str(k) for k in range(1, 9)] + ["9" * 30],
    "--max-block-tokens": ["8", "16", "64", str(2**24)],
    "--max-documents": ["0", "3", "100"],
    "--num-signal-tokens": ["1", "2"],
    "--query-position-offset": ["0", "5", "20000"],
    "--scoring-mode": ["blockrank", "full", "icr"],
}
INVALID_FLAGS = {
    "--format": ["csv"],
    "--top-k": ["0", "-2", "x", "1.5"],
    "--max-block-tokens": ["1", "-5", "abc", str(2**31)],
    "--max-documents": ["-1", "1e3"],
    "--num-signal-tokens": ["0"],
    "--query-position-offset": ["-1", str(2**63 - 1)],
    "--scoring-mode": ["bm25"],
    "--no-such-flag": ["1"],
}
valid_flags = st.fixed_dictionaries(
    {}, optional={flag: st.sampled_from(values) for flag, values in VALID_FLAGS.items()}
)
any_flags = st.fixed_dictionaries(
    {}, optional={flag: st.sampled_from(VALID_FLAGS.get(flag, []) + values) for flag, values in INVALID_FLAGS.items()}
)
valid_queries = st.one_of(
    st.sampled_from(["what is a cat", "purr", "q" * 3000, "猫 \ud800 \udce9"]),
    odd_text.filter(lambda q: q.strip() and not q.startswith("-")),
)
any_queries = st.one_of(valid_queries, odd_text, st.sampled_from(["-x", "--top-k", " "]))
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """`main(argv)` in process with the tiny model; its status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.object(BlockRank, "from_pretrained", staticmethod(tiny_from_pretrained)),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def refuse_constant(constant: str) -> None:
    raise AssertionError(f"bare {constant} in the output")


def check_outcome(status: int, out: str, err: str, top_k: str | None) -> None:
    """Status 0 with one strict JSON record a line, or status 2 with no output and one error line; never a traceback.

    Besides that error line, stderr holds only one-line warnings (undecodable bytes, cleaned text, truncation)
    printed before it: `blockrank: warning: ...` (Python warnings) or `WARNING <logger>: ...` (logging).
    """
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert status in (0, 2), (status, err)
    lines = [line for line in err.splitlines() if not line.startswith(("blockrank: warning: ", "WARNING "))]
    if status == 2:
        assert len(lines) == 1 and lines[0].startswith("blockrank: error: ") and err.endswith(lines[0] + "\n"), err
        assert out == ""
        return
    assert lines == [], err
    records = [json.loads(line, parse_constant=refuse_constant) for line in out.splitlines()]
    out.encode("utf-8")
    assert [r["rank"] for r in records] == list(range(1, len(records) + 1))
    assert top_k is None or len(records) <= int(top_k)


def run_rerank(folder: Path, data: bytes, options: dict[str, str], query: str) -> None:
    """`blockrank rerank` over `data` with `options`, in process, checked by `check_outcome`."""
    tiny_parts()  # built once, outside the examples' timing
    path = folder / "input"
    path.write_bytes(data)
    argv = ["rerank", "--query", query, "--input", str(path)] + [
        part for flag, value in options.items() for part in (flag, value)
    ]
    status, out, err = run_main(argv)
    event(f"status {status}")
    check_outcome(status, out, err, options.get("--top-k") if status == 0 else None)


@SETTINGS
@given(data=inputs(), options=any_flags, query=any_queries)
@example(data=b"[" * 100_000 + b"\n", options={}, query="q")
@example(data=b"\xef\xbb\xbfa\tb\rc\td\r", options={"--format": "tsv"}, query="q")
@example(data=b'{"id": "\\ud800", "text": "x", "m": NaN}\n"y"\n', options={}, query="q")
def test_any_command_line_exits_0_with_jsonl_or_2_with_one_error_line(tmp_path_factory, data, options, query):
    run_rerank(tmp_path_factory.mktemp("fuzz"), data, options, query)


@SETTINGS
@given(data=st.one_of(inputs(), valid_inputs()), options=valid_flags, query=valid_queries)
def test_valid_command_lines_over_hostile_documents_exit_0_or_2(tmp_path_factory, data, options, query):
    """Valid flags and queries, so that most examples reach the model and print their results."""
    run_rerank(tmp_path_factory.mktemp("fuzz"), data, options, query)


CHILD_CASES = [
    b'"Cats purr."\r"Stocks fell."\r',
    b'\xef\xbb\xbf{"id": "\\ud800", "text": "a", "v": Infinity}\n{"text": "b", "title": 0}\n',
    b"[" * 50_000 + b"\n",
    b"caf\xe9\tbytes\n\xff\n",
]


def test_hostile_inputs_in_a_child_process():
    """The same outcomes with real stdin, stdout and stderr and the interpreter's exit (its final flush)."""
    from test_cli_hardening import TINY_CLI

    for data in CHILD_CASES:
        result = subprocess.run(
            [sys.executable, "-c", TINY_CLI, "rerank", "-q", "cats"],
            input=data,
            capture_output=True,
            timeout=120,
            cwd=Path(__file__).resolve().parents[1],
        )
        check_outcome(
            result.returncode, result.stdout.decode("utf-8"), result.stderr.decode("utf-8", errors="replace"), None
        )


record_values = st.one_of(
    json_values,
    st.sampled_from(["lora", "full", "embedded:smollm2-135m-instruct", "embedded:nope", ".", "..", "/", "../x"]),
)
SETTING_NAMES = ["scoring_layer", "num_signal_tokens", "query_position_offset", "max_block_tokens", "device", "dtype"]
checkpoint_records = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "format": st.one_of(st.just("blockrank-checkpoint/1"), record_values),
            "kind": st.one_of(st.sampled_from(["lora", "full"]), record_values),
            "base_model": record_values,
            "settings": st.one_of(
                st.dictionaries(
                    st.sampled_from(SETTING_NAMES), st.one_of(st.integers(-3, 2**40), record_values), max_size=4
                ),
                record_values,
            ),
            "training": st.one_of(
                st.fixed_dictionaries(
                    {}, optional={"max_block_tokens": st.one_of(st.integers(-3, 600), record_values)}
                ),
                record_values,
            ),
        },
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(record=checkpoint_records, raw=st.sampled_from([None, b"", b"\xff\xfe", b"{" * 50_000, b"[1, 2"]))
@example(record={"kind": "lora", "base_model": None}, raw=None)
@example(record={"kind": "lora", "base_model": "."}, raw=None)
@example(record={"kind": "lora"}, raw=None)
@example(record={"kind": "full", "settings": {"query_position_offset": 2**63 - 1}}, raw=None)
def test_any_checkpoint_record_exits_0_or_2_with_one_error_line(tmp_path_factory, monkeypatch, record, raw):
    """`blockrank rerank --model DIR` over any `blockrank.json`: a record is read and checked before weights load."""
    monkeypatch.setenv(
        "HF_HUB_OFFLINE", "1"
    )  # the same for every example: a hub id named by a record fails at once, offline
    folder = tmp_path_factory.mktemp("ckpt")
    record_file = folder / "blockrank.json"
    record_file.write_bytes(raw if raw is not None else json.dumps(record).encode("utf-8", errors="surrogatepass"))
    (folder / "docs.jsonl").write_text('"Cats purr."\n"Stocks fell."\n')
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["rerank", "-q", "cats", "--input", str(folder / "docs.jsonl"), "--model", str(folder)])
    event(f"status {status}")
    check_outcome(status, out.getvalue(), err.getvalue(), None)
