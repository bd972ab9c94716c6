"""Training on hostile or torn input: no code runs from a checkpoint, resumed logs never repeat steps, bad JSONL
names its line."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from test_training import EXAMPLES, tiny_config, tiny_lm_dir, smollm_tokenizer  # noqa: F401 (fixtures)

from blockrank_rerank.training import RankingExample, Trainer, load_examples


class Payload:
    """Unpickling this object runs code: it writes `marker` (what an attacker's planted checkpoint would do)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def plant(path, payload: Payload, how: str) -> None:
    """Write `payload` at `path` as torch.save writes a checkpoint (zip) or as a bare pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "torch.save":
        torch.save({"step": 1, "weights": payload}, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_planted_checkpoint_is_refused_and_runs_nothing(tmp_path, tiny_lm_dir, how):  # noqa: F811
    marker = tmp_path / "marker"
    config = tiny_config(tmp_path, tiny_lm_dir)
    state = tmp_path / "run" / "checkpoint" / "state.pt"
    plant(state, Payload(marker), how)
    with pytest.raises(ValueError, match=r"state\.pt.*refuses to unpickle.*delete it or use another --output-dir"):
        Trainer(config, examples=EXAMPLES).run(show_progress_bar=False)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(marker)))  # the payload is live: an unguarded load would have run it
    assert marker.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"PK\x03\x04torn",
        b"",
        {"step": 1},
        {"step": -1, "seconds": 0.0, "weights": {}, "optimizer": {}, "scheduler": {}, "config": {}},
    ],
)
def test_torn_or_foreign_checkpoint_is_a_value_error_naming_the_file(tmp_path, tiny_lm_dir, content):  # noqa: F811
    state = tmp_path / "run" / "checkpoint" / "state.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(content) if isinstance(content, bytes) else torch.save(content, state)
    with pytest.raises(ValueError, match=r"state\.pt.*delete it or use another --output-dir"):
        Trainer(tiny_config(tmp_path, tiny_lm_dir), examples=EXAMPLES).run(show_progress_bar=False)


def test_checkpoint_of_plain_data_resumes_under_weights_only(tmp_path, tiny_lm_dir):  # noqa: F811
    first = Trainer(tiny_config(tmp_path, tiny_lm_dir, max_steps=1), examples=EXAMPLES)
    first.run(show_progress_bar=False)
    state = torch.load(first.output / "checkpoint" / "state.pt", weights_only=True)
    assert state["step"] == 1 and state["config"]["sources"] == first.config.sources
    resumed = Trainer(tiny_config(tmp_path, tiny_lm_dir, max_steps=3), examples=EXAMPLES)
    assert resumed.load_checkpoint() and resumed.step == 1
    for name, value in first.trainable_state().items():
        assert torch.equal(value, resumed.trainable_state()[name]), name
    assert resumed.optimizer.state_dict()["state"].keys() == first.optimizer.state_dict()["state"].keys()


def log_steps(output) -> list[int]:
    return [json.loads(line)["step"] for line in (output / "log.jsonl").read_text().splitlines()]


def test_resumed_log_is_cut_to_the_checkpointed_step(tmp_path, tiny_lm_dir):  # noqa: F811
    killed = Trainer(tiny_config(tmp_path, tiny_lm_dir, max_steps=4), examples=EXAMPLES)
    killed.output.mkdir(parents=True)
    stream = killed.prompt_stream()
    killed.train_step(stream), killed.train_step(stream)
    killed.save_checkpoint()  # checkpointed at step 2; step 3 was logged, then the process died mid-line
    records = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3)]
    (killed.output / "log.jsonl").write_text("\n".join(records) + '\n{"step": 4, "lo')
    Trainer(tiny_config(tmp_path, tiny_lm_dir, max_steps=4), examples=EXAMPLES).run(show_progress_bar=False)
    assert log_steps(killed.output) == [1, 2, 3, 4]
    assert not (killed.output / "log.jsonl.tmp").exists()


def test_fresh_run_starts_a_fresh_log(tmp_path, tiny_lm_dir):  # noqa: F811
    output = tmp_path / "run"
    output.mkdir()
    (output / "log.jsonl").write_text(
        "".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3))
    )  # killed before any checkpoint
    Trainer(tiny_config(tmp_path, tiny_lm_dir), examples=EXAMPLES).run(show_progress_bar=False)
    assert log_steps(output) == [1, 2]


def write_lines(tmp_path, *lines: str, newline: str = "\n", bom: bool = False):
    path = tmp_path / "mine.jsonl"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join(lines).encode("utf-8") + newline.encode())
    return path


GOOD = json.dumps({"query": "q", "positives": ["p"], "negatives": ["n"]})


@pytest.mark.parametrize(
    "bad, message",
    [
        ("[1]", "expected a JSON object, got a list"),
        ('"x"', "expected a JSON object, got a string"),
        ("3", "expected a JSON object, got a number"),
        ("null", "expected a JSON object, got null"),
        ('{"query": 5, "positives": ["p"]}', "'query' must be a string, got a number"),
        ('{"query": ["q"], "positives": ["p"]}', "'query' must be a string, got a list"),
        ('{"query": "q", "positives": "text"}', "'positives' must be a list of strings, got a string"),
        ('{"query": "q", "positives": ["p", 7]}', "'positives' must be a list of strings, got a list holding a number"),
        ('{"query": "q", "positives": ["p", null]}', "'positives' must be a list of strings, got a list holding null"),
        (
            '{"query": "q", "positives": ["p"], "negatives": "text"}',
            "'negatives' must be a list of strings, got a string",
        ),
        (
            '{"query": "q", "positives": ["p"], "negatives": {"a": 1}}',
            "'negatives' must be a list of strings, got an object",
        ),
        ('{"question": "q", "positives": ["p"]}', "needs the keys 'query' and 'positives'"),
        ('{"query": "q", "positives": ["p"]', "is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_jsonl_line_is_a_value_error_with_file_and_line(tmp_path, bad, message):
    path = write_lines(tmp_path, GOOD, "", bad)
    with pytest.raises(ValueError, match=r"mine\.jsonl: line 3\b.*") as error:
        load_examples([f"jsonl:{path}"])
    assert message in str(error.value)


def test_undecodable_bytes_name_their_line(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"query": "\xff", "positives": ["p"]}\n')
    with pytest.raises(ValueError, match=r"mine\.jsonl: line 2 is not valid UTF-8"):
        load_examples([f"jsonl:{path}"])


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("bom", [False, True])
def test_jsonl_source_accepts_bom_and_any_line_ending(tmp_path, newline, bom):
    second = json.dumps({"query": "q2", "positives": ["p2"]})
    path = write_lines(tmp_path, GOOD, second, newline=newline, bom=bom)
    examples = load_examples([f"jsonl:{path}"])
    assert examples == [
        RankingExample("q", ("p",), ("n",), f"jsonl:{path}"),
        RankingExample("q2", ("p2",), (), f"jsonl:{path}"),
    ]
    bad = write_lines(tmp_path, GOOD, "[1]", newline=newline, bom=bom)
    with pytest.raises(ValueError, match=r"line 2: expected a JSON object"):
        load_examples([f"jsonl:{bad}"])
