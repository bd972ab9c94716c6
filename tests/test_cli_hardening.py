"""Hostile and careless input to the CLI and the library (issue 15, items 3, 4, 5, 8a, 9): one test per row.

CLI runs that need a model use a tiny random Llama behind the embedded tokenizer (`tiny_from_pretrained`),
patched in for `BlockRank.from_pretrained`; the cases that depend on the process (closed stdin or stdout,
a broken pipe, Ctrl-C, a full disk) run the real command in a subprocess.
"""

from __future__ import annotations

import fcntl
import functools
import io
import json
import os
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from blockrank_rerank import BlockRank, BlockRankConfig
from blockrank_rerank.cli import main, open_text, read_documents
from blockrank_rerank.evaluation.evaluate import evaluate_scorer, read_per_query
from blockrank_rerank.inputs import check_documents

from conftest import tiny_model
from test_evaluate import ReverseScorer, toy_run

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ENTRY_POINT = Path(PYTHON).parent / "blockrank"
BLOCKRANK = (
    [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [PYTHON, "-m", "blockrank_rerank.cli"]
)  # the installed command
# A child process running `blockrank` with the tiny model patched in (the tests directory is importable there).
TINY_CLI = (
    "import sys; sys.path[:0] = [{tests!r}]; import test_cli_hardening as t; t.use_tiny_model(); "
    "from blockrank_rerank.cli import main; sys.exit(main(sys.argv[1:]))"
).format(tests=str(ROOT / "tests"))


@functools.lru_cache(maxsize=None)
def tiny_parts() -> tuple[Any, Any]:
    """A 2-layer random Llama sized to the embedded tokenizer, and that tokenizer (built once per process)."""
    from transformers import AutoTokenizer

    from blockrank_rerank.loading import embedded_default_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_default_dir())
    model = tiny_model("llama", num_layers=2)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return model, tokenizer


def tiny_from_pretrained(
    model_name_or_path: Optional[str] = None, *, config: Optional[BlockRankConfig] = None, **overrides: Any
) -> BlockRank:
    """Stands in for `BlockRank.from_pretrained`: the tiny model, with the same config overrides and validation."""
    model, tokenizer = tiny_parts()
    return BlockRank(model, tokenizer, (config or BlockRankConfig(scoring_layer=1)).replace(**overrides), name="tiny")


def use_tiny_model() -> None:
    """Patch the tiny model in for every `BlockRank.from_pretrained` of this process (for child processes)."""
    BlockRank.from_pretrained = staticmethod(tiny_from_pretrained)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(BlockRank, "from_pretrained", staticmethod(tiny_from_pretrained))
    return tiny_from_pretrained()


def error_line(capsys) -> str:
    """The whole of stderr, checked to be one line `blockrank: error: ...`."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("blockrank: error: ") and "Traceback" not in err, err
    return err


def run_tiny_cli(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """`blockrank args` in a child process with the tiny model patched in, text in and out."""
    return subprocess.run([PYTHON, "-c", TINY_CLI, *args], text=True, timeout=120, cwd=ROOT, **kwargs)


# Item 3: a documented, configurable maximum number of documents per call; the CLI stops reading there.


def test_max_documents_is_validated_and_enforced_by_rerank_score_and_batch(tiny):
    assert BlockRankConfig().max_documents == 100_000
    for bad in (0, -1, True, 2.5, "10"):
        with pytest.raises(ValueError, match="max_documents"):
            BlockRankConfig(max_documents=bad)
    ranker = BlockRank(tiny.engine.model, tiny.engine.tokenizer, tiny.config.replace(max_documents=3))
    docs = ["a", "b", "c", "d"]
    for call in (
        lambda: ranker.rerank("q", docs),
        lambda: ranker.score("q", docs),
        lambda: ranker.rerank_batch(["q"], [docs]),
    ):
        with pytest.raises(
            ValueError,
            match=r"4 documents exceed max_documents=3; raise the limit with BlockRankConfig\(max_documents=\.\.\.\)",
        ):
            call()
    assert len(ranker.rerank("q", docs[:3])) == 3
    assert (
        len(
            BlockRank(tiny.engine.model, tiny.engine.tokenizer, tiny.config.replace(max_documents=None)).rerank(
                "q", docs
            )
        )
        == 4
    )


class CountingInput(io.RawIOBase):
    """`lines` copies of a one-character JSONL document, counting the bytes handed out."""

    def __init__(self, lines: int) -> None:
        self.remaining, self.consumed = b'"x"\n' * lines, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = min(len(buffer), len(self.remaining) - self.consumed)
        buffer[:size] = self.remaining[self.consumed : self.consumed + size]
        self.consumed += size
        return size


def test_cli_stops_reading_at_the_document_limit(monkeypatch, capsys):
    source = CountingInput(2_000_000)  # 8 MB, 2 M documents
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(source)))
    monkeypatch.setattr(BlockRank, "from_pretrained", staticmethod(lambda *a, **k: pytest.fail("the model was loaded")))
    assert main(["rerank", "--query", "q", "--max-documents", "1000"]) == 2
    assert "more than 1000 documents (line 1001); raise the limit with --max-documents" in error_line(capsys)
    assert source.consumed <= 1001 * 4 + 64 * 1024, source.consumed  # stopped at the limit, not at the end of the input
    assert read_documents(iter(['"a"\n', "\n", '"b"\n']), "jsonl", max_documents=2) == [
        "a",
        "b",
    ]  # blank lines do not count


def test_cli_document_limit_reaches_the_config_and_zero_lifts_it(tmp_path, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(
        BlockRank,
        "from_pretrained",
        staticmethod(lambda *a, **k: seen.append(k["max_documents"]) or tiny_from_pretrained(**k)),
    )
    docs = tmp_path / "docs.jsonl"
    docs.write_text('"a"\n"b"\n"c"\n')
    assert main(["rerank", "-q", "q", "-i", str(docs), "--max-documents", "0"]) == 0
    assert main(["rerank", "-q", "q", "-i", str(docs)]) == 0
    assert seen == [None, 100_000]
    assert main(["rerank", "-q", "q", "-i", str(docs), "--max-documents", "-1"]) == 2


# Item 4: every failure is one line `blockrank: error: ...` with status 2 (130 for Ctrl-C), never a traceback.


def test_deeply_nested_json_is_an_error_line(tmp_path, capsys, tiny):
    docs = tmp_path / "deep.jsonl"
    docs.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["rerank", "-q", "q", "-i", str(docs)]) == 2
    assert "line 1 is not valid JSON: nested too deeply" in error_line(capsys)
    docs.write_text(
        json.dumps({"text": "t", "m": json.loads("[" * 900 + "]" * 900)}) + "\n"
    )  # parses; too deep to clean
    assert main(["rerank", "-q", "q", "-i", str(docs)]) == 2
    assert "nested too deeply" in error_line(capsys)


def test_closed_stdin_and_stdout_are_errors_in_process(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", None)
    assert main(["rerank", "-q", "q"]) == 2
    assert "stdin is closed" in error_line(capsys)
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["rerank", "-q", "q", "-i", "x.jsonl"]) == 2
    assert "stdout is closed" in error_line(capsys)


@pytest.mark.parametrize("redirect", ["<&-", ">&-"])
def test_closed_stdin_and_stdout_are_errors_in_a_real_shell(redirect):
    result = subprocess.run(
        ["sh", "-c", f'echo \'"a"\' | "$@" rerank -q q {redirect}', "sh", *BLOCKRANK],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("blockrank: error: ")
    ), result.stderr
    assert ("stdin" if redirect == "<&-" else "stdout") + " is closed" in result.stderr


def test_usage_and_unexpected_errors_are_one_line(monkeypatch, capsys):
    assert main(["rerank", "-q", "q", "--top-k", "many"]) == 2
    assert "argument --top-k: invalid int value: 'many' (see blockrank rerank --help)" in error_line(capsys)
    assert main([]) == 2
    error_line(capsys)

    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(BlockRank, "from_pretrained", staticmethod(broken))
    monkeypatch.setattr(sys, "stdin", io.StringIO('"a"\n'))
    assert main(["rerank", "-q", "q"]) == 1  # a bug: one line, status 1
    assert "unexpected KeyError: 'surprise' (a bug" in error_line(capsys)


def wait_until_read(pipe, deadline: float) -> None:
    """Wait until the child has read every byte written to `pipe` (it then blocks reading stdin)."""
    pending = bytearray(4)
    while time.monotonic() < deadline:
        fcntl.ioctl(pipe.fileno(), termios.FIONREAD, pending)
        if int.from_bytes(pending, sys.byteorder) == 0:
            return
        time.sleep(0.05)
    pytest.fail("the child never read its input")


def test_ctrl_c_while_reading_exits_130_with_one_line():
    child = subprocess.Popen(
        [*BLOCKRANK, "rerank", "-q", "q"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        # as at a terminal: a suite run in the background (`make test &`) inherits SIGINT ignored, and Python then
        # never turns it into KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        child.stdin.write(b'"first document"\n')
        child.stdin.flush()
        wait_until_read(child.stdin, time.monotonic() + 60)
        time.sleep(0.2)  # from its read call into the blocking one
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)  # stdin stays open until here: the child is still waiting for input
    finally:
        child.kill()
    assert child.returncode == 130 and out == b""
    assert err.decode() == "blockrank: error: interrupted\n"


def test_broken_pipe_exits_quietly_with_141():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte is written, as with `| head -c 1` on a long output
    try:
        result = run_tiny_cli(
            ["rerank", "-q", "q"],
            input="\n".join(f'"doc {i}"' for i in range(50)),
            stdout=write_end,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == ""
    shell = subprocess.run(
        [
            "bash",
            "-c",
            'for i in $(seq 300); do echo \'"doc \'$i\'"\'; done | "$0" -c "$1" rerank -q q | head -c 1 >/dev/null; '
            'echo "${PIPESTATUS[1]}" >&2',
            PYTHON,
            TINY_CLI,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert shell.stderr.strip() in ("0", "141"), shell.stderr  # "Exception ignored" or a traceback would show here


def test_failed_write_to_stdout_is_an_error_not_a_silent_success():
    with open("/dev/full", "w") as full:
        result = run_tiny_cli(["rerank", "-q", "q"], input='"a"\n"b"\n', stdout=full, stderr=subprocess.PIPE)
    assert result.returncode == 2 and result.stderr == "blockrank: error: [Errno 28] No space left on device\n"


def test_per_query_line_without_qid_and_identity_holding_a_list_are_errors_naming_the_file(tmp_path):
    out = tmp_path / "out"
    evaluate_scorer(ReverseScorer(), toy_run(), out, method="rev", depth=3, show_progress_bar=False)
    lines = (out / "per_query.jsonl").read_text().splitlines()
    (out / "per_query.jsonl").write_text(
        "\n".join([lines[0], json.dumps({"docids": [], "scores": []}), *lines[1:]]) + "\n"
    )
    with pytest.raises(ValueError, match=r"per_query.jsonl: line 2 is not a per-query record \(no 'qid'"):
        evaluate_scorer(ReverseScorer(), toy_run(), out, method="rev", depth=3, show_progress_bar=False)
    (out / "per_query.jsonl").write_text("\n".join(lines) + "\n")
    (out / "identity.json").write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"identity.json holds a JSON list, not an object"):
        evaluate_scorer(ReverseScorer(), toy_run(), out, method="rev", depth=3, show_progress_bar=False)
    (out / "identity.json").write_text("{")
    with pytest.raises(ValueError, match=r"identity.json is not valid JSON"):
        evaluate_scorer(ReverseScorer(), toy_run(), out, method="rev", depth=3, show_progress_bar=False)


# Item 5: lone surrogates in ids and metadata are cleaned on input; non-finite numbers are printed as null.


def test_lone_surrogates_in_ids_and_metadata_are_cleaned():
    document = {"id": "a\ud800", "text": "t", "tags": ["x\udc00", {"k\udfff": ("\ud800",)}], "n": 1.5}
    candidates = check_documents([document])
    assert candidates.ids == ["a\ufffd"]
    assert candidates.metadata == [{"tags": ["x\ufffd", {"k\ufffd": ("\ufffd",)}], "n": 1.5}]
    assert document["id"] == "a\ud800" and document["tags"][0] == "x\udc00"  # the caller's objects are untouched
    clean = {"id": 7, "text": "t", "m": {"k": [1, "v"]}}
    assert check_documents([clean]).metadata[0]["m"] is clean["m"]  # nothing to clean: nothing copied


def test_cli_prints_surrogate_ids_and_non_finite_metadata_as_valid_json(tmp_path, capsys, tiny):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        '{"id": "\\ud800x", "text": "a", "m": {"\\udc00": "\\udfff"}, "nan": NaN}\n'
        '{"id": Infinity, "text": "b", "v": [-Infinity, 1e999, 2.5], "sep": "x\\u2028y"}\n'
    )
    assert main(["rerank", "-q", "q", "-i", str(docs)]) == 0
    out = capsys.readouterr().out
    out.encode("utf-8")  # would raise on a lone surrogate
    lines = out.splitlines()  # U+2028 is escaped, so this splitter sees two records
    assert len(lines) == 2

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} in the output")

    records = {r["index"]: r for r in (json.loads(line, parse_constant=refuse) for line in lines)}
    assert records[0]["id"] == "\ufffdx" and records[0]["metadata"] == {"m": {"\ufffd": "\ufffd"}, "nan": None}
    assert records[1]["id"] is None and records[1]["metadata"] == {"v": [None, None, 2.5], "sep": "x\u2028y"}


# Item 8a: resuming after a kill cuts a torn last line of per_query.jsonl instead of appending onto it.


def test_resume_cuts_a_torn_last_line_and_keeps_one_record_per_line(tmp_path, caplog):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        evaluate_scorer(ReverseScorer(fail_after=1), toy_run(), out, method="rev", depth=3, show_progress_bar=False)
    path = out / "per_query.jsonl"
    with open(path, "a") as f:
        f.write('{"qid": "q2", "docids": ["d"')  # a write cut short by a kill
    scorer = ReverseScorer()
    evaluate_scorer(scorer, toy_run(), out, method="rev", depth=3, show_progress_bar=False)
    assert scorer.calls == 2
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["qid"] for r in records] == ["q1", "q2", "q3"]
    caplog.clear()
    again = ReverseScorer()
    evaluate_scorer(again, toy_run(), out, method="rev", depth=3, show_progress_bar=False)
    assert again.calls == 0 and "unreadable" not in caplog.text and "torn" not in caplog.text
    path.write_text(path.read_text().rstrip("\n"))  # a whole record that only lost its newline is kept
    evaluate_scorer(again, toy_run(), out, method="rev", depth=3, show_progress_bar=False)
    assert again.calls == 0 and path.read_text().endswith("}\n") and len(read_per_query(path)) == 3


# Item 9: BOM, CR-only lines, string queries, batch validation before work, consistent titles.


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_bom_and_every_line_ending_are_read(tmp_path, newline):
    jsonl, tsv = tmp_path / "d.jsonl", tmp_path / "d.tsv"
    jsonl.write_bytes(b"\xef\xbb\xbf" + newline.join([b'{"id": "a", "text": "x"}', b'"y"']) + newline)
    tsv.write_bytes(b"\xef\xbb\xbf" + newline.join([b"a\tx", b"b\ty"]))
    with open_text(str(jsonl)) as lines:
        assert read_documents(lines, "jsonl") == [{"id": "a", "text": "x"}, "y"]
    with open_text(str(tsv)) as lines:
        assert read_documents(lines, "tsv") == [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]


def test_cli_tsv_with_a_bom_keeps_the_first_id(tmp_path, capsys, tiny):
    docs = tmp_path / "d.tsv"
    docs.write_bytes(b"\xef\xbb\xbfa\tcats\rb\tdogs\r")
    assert main(["rerank", "-q", "q", "-i", str(docs)]) == 0
    assert sorted(json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()) == ["a", "b"]


def test_rerank_batch_refuses_a_string_and_validates_everything_before_running(tiny, monkeypatch):
    for queries in ("abc", b"abc"):
        with pytest.raises(TypeError, match="queries must be a list of str"):
            tiny.rerank_batch(queries, [["x"], ["y"], ["z"]])
    calls = []
    monkeypatch.setattr(
        tiny, "score_contents", lambda query, contents: calls.append(query) or [1 / len(contents)] * len(contents)
    )
    with pytest.raises(TypeError, match=r"documents\[1\]: document 1 must be a str"):
        tiny.rerank_batch(["q1", "q2"], [["a", "b"], ["a", 42]])
    with pytest.raises(ValueError, match=r"queries\[1\]: query must contain non-whitespace text"):
        tiny.rerank_batch(["q1", " "], [["a"], ["b"]])
    with pytest.raises(ValueError, match="top_k"):
        tiny.rerank_batch(["q1"], [["a"]], top_k=0)
    assert calls == []  # nothing ran, so no work was thrown away
    assert [len(r) for r in tiny.rerank_batch(("q1", "q2"), [["a", "b"], ["c"]])] == [2, 1]


def test_title_must_be_a_string_or_none():
    for title in (0, 5, False, 0.0, []):
        with pytest.raises(TypeError, match="document 1: 'title' must be a str or None"):
            check_documents(["ok", {"text": "t", "title": title}])
    assert check_documents(
        [{"text": "t", "title": None}, {"text": "t", "title": ""}, {"text": "t", "title": "T"}]
    ).contents == ["t", "t", "T t"]
