"""The `blockrank` command line: reading JSONL/TSV documents and printing ranked JSONL."""

from __future__ import annotations

import io
import json

import pytest

from blockrank_rerank.cli import main, read_documents


def test_read_documents_jsonl_and_tsv():
    assert read_documents(io.StringIO('"plain"\n\n{"id": "a", "text": "t"}\n'), "jsonl") == [
        "plain",
        {"id": "a", "text": "t"},
    ]
    assert read_documents(io.StringIO("d1\tfirst\nno tab here\n"), "tsv") == [
        {"id": "d1", "text": "first"},
        "no tab here",
    ]
    with pytest.raises(ValueError, match="line 1"):
        read_documents(io.StringIO("{broken\n"), "jsonl")
    with pytest.raises(ValueError, match="line 1"):
        read_documents(io.StringIO("42\n"), "jsonl")


def test_rerank_command_prints_ranked_jsonl(tmp_path, capsys, default_ranker):
    docs = tmp_path / "docs.tsv"
    docs.write_bytes(b"a\tCats are felines.\nb\tStocks fell.\nc\tCaf\xe9 bytes that are not UTF-8\n")
    with pytest.warns(UserWarning, match="UTF-8"):
        assert main(["rerank", "--query", "what is a cat", "--input", str(docs), "--top-k", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["rank"] for line in lines] == [1, 2]
    assert {line["id"] for line in lines} <= {"a", "b", "c"}


def test_rerank_score_threshold_prints_only_documents_at_or_above_it(tmp_path, capsys, default_ranker):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "Cats are felines."}\n{"id": "b", "text": "Stocks fell."}\n')
    assert main(["rerank", "-q", "what is a cat", "-i", str(docs)]) == 0
    every = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(0 < line["relevance_score"] < 1 for line in every)
    threshold = max(line["relevance_score"] for line in every)
    assert main(["rerank", "-q", "what is a cat", "-i", str(docs), "--score-threshold", str(threshold)]) == 0
    kept = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in kept] == [max(every, key=lambda line: line["relevance_score"])["id"]]
    assert main(["rerank", "-q", "q", "-i", str(docs), "--score-threshold", "nan"]) == 2
    assert "--score-threshold" in capsys.readouterr().err


def test_bad_input_is_an_error_message_not_a_traceback(tmp_path, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('"x"\n')
    assert main(["rerank", "--query", " ", "--input", str(docs)]) == 2
    assert "query" in capsys.readouterr().err


def test_version_and_help_on_every_option(capsys):
    from blockrank_rerank import __version__
    from blockrank_rerank.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"blockrank {__version__}"
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, command in commands.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"blockrank {name} {action.option_strings[0]} has no help text"


def test_empty_input_says_so_and_loads_no_model(tmp_path, capsys, monkeypatch):
    from blockrank_rerank import reranker

    def no_model(*args, **kwargs):
        raise AssertionError("an empty input must not load the model")

    monkeypatch.setattr(reranker.BlockRank, "from_pretrained", no_model)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["rerank", "-q", "anything", "-i", str(empty)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no documents in" in captured.err and "empty.jsonl" in captured.err


def test_demo_without_data_names_the_path_it_looked_at_and_honours_queries(
    tmp_path, capsys, monkeypatch, default_ranker
):
    from blockrank_rerank.evaluation import demo

    monkeypatch.setattr(demo.BlockRank, "from_pretrained", classmethod(lambda cls, model=None: default_ranker))
    monkeypatch.setenv("BLOCKRANK_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--queries", "1"]) == 0
    out = capsys.readouterr().out
    assert "no DL19 data at nowhere;" in out  # relative to the working directory
    assert out.count("Query:") == 1


def test_max_pack_tokens_and_dtype_reach_the_config_overrides():
    from blockrank_rerank.cli import build_parser, config_overrides

    args = build_parser().parse_args(
        ["batch-rerank", "--input", "in.jsonl", "--output", "out", "--max-pack-tokens", "0", "--dtype", "float32"]
    )
    assert config_overrides(args) == {"dtype": "float32", "max_pack_tokens": 0}
