"""Training: objective terms, gradients, the forward against the dense reference, prompts, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest
import torch
from conftest import FAMILIES, random_prompt, require_data, tiny_model

from blockrank_rerank import BlockRank, BlockRankConfig
from blockrank_rerank.attention import plan_attention
from blockrank_rerank.layout import build_layout
from blockrank_rerank.loading import model_settings
from blockrank_rerank.reference import dense_reference
from blockrank_rerank.training import RankingExample, TrainConfig, Trainer, build_training_prompt, load_examples
from blockrank_rerank.training.objective import (
    batched_dense_forward,
    contrastive_loss,
    next_token_loss,
    training_forward,
)
from blockrank_rerank.training.prompts import completion_text, sample_candidates

COMPLETION = [11, 12, 13]
EXAMPLES = [
    RankingExample(
        "what do cats eat",
        ("Cats eat meat and fish.",),
        ("The stock market fell.", "Rain is water.", "Paris is in France."),
        "unit",
    ),
    RankingExample(
        "capital of france",
        ("Paris is the capital of France.", "France's capital city is Paris."),
        ("Cats eat meat.", "Snow is cold."),
        "unit",
    ),
]


@pytest.fixture(scope="module")
def smollm_tokenizer(default_ranker):
    return default_ranker.engine.tokenizer


@pytest.fixture(scope="module")
def tiny_lm_dir(smollm_tokenizer, tmp_path_factory):
    """A tiny random Llama over the real SmolLM2 vocabulary, saved as a local model a training run can name."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(smollm_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_lm")
    LlamaForCausalLM(config).save_pretrained(folder)
    smollm_tokenizer.save_pretrained(folder)
    return folder


def tiny_config(tmp_path, model_dir, **changes) -> TrainConfig:
    fields = dict(
        output_dir=str(tmp_path / "run"),
        model=str(model_dir),
        num_candidates=4,
        max_block_tokens=160,
        scoring_layer=2,
        lora_rank=4,
        learning_rate=1e-3,
        warmup_steps=0,
        max_steps=2,
        prompts_per_step=2,
        save_every=1,
        gradient_checkpointing=False,
    )
    return TrainConfig(**{**fields, **changes})


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_dense_forward_equals_packed_forward(family):
    model = tiny_model(family, peaked=True)
    layouts = [
        build_layout(random_prompt(n, seed=n), query_position_offset=16384, completion=COMPLETION[: 1 + n % 3])
        for n in (3, 8, 5)
    ]
    batched = batched_dense_forward(model, layouts, 2, 2)
    for layout, dense in zip(layouts, batched):
        packed = training_forward(model, plan_attention(layout), 2, 2)
        assert (dense.scores - packed.scores).abs().max() < 1e-4
        assert (dense.answer_logits - packed.answer_logits).abs().max() < 1e-4
        assert torch.equal(dense.answer_targets, packed.answer_targets)


def test_dense_and_packed_training_steps_agree(tmp_path, tiny_lm_dir):
    packed = Trainer(tiny_config(tmp_path / "p", tiny_lm_dir), examples=EXAMPLES)
    dense = Trainer(tiny_config(tmp_path / "d", tiny_lm_dir, forward="dense"), examples=EXAMPLES)
    first, second = packed.train_step(packed.prompt_stream()), dense.train_step(dense.prompt_stream())
    assert first == pytest.approx(second, rel=1e-4)
    for name, value in packed.trainable_state().items():
        assert torch.allclose(value, dense.trainable_state()[name], atol=1e-5), name


@pytest.mark.parametrize("family", FAMILIES)
def test_training_forward_equals_dense_reference_and_inference(family):
    model = tiny_model(family, peaked=True)
    prompt = random_prompt(7, seed=5)
    trained = build_layout(prompt, query_position_offset=16384, completion=COMPLETION)
    outputs = training_forward(model, plan_attention(trained), 2, 2, gradient_checkpointing=True)
    reference, _ = dense_reference(model, trained, 2, 2)
    inference, _ = dense_reference(model, build_layout(prompt, query_position_offset=16384), 2, 2)
    assert (outputs.scores - reference).abs().max() < 1e-4
    assert (outputs.scores - inference).abs().max() < 1e-4  # the completion never changes what inference reads
    assert outputs.answer_targets.tolist() == COMPLETION
    with torch.no_grad():
        full = model(
            trained.input_ids[None],
            attention_mask=torch.zeros(1, 1, trained.num_tokens, trained.num_tokens).masked_fill(
                ~trained.allowed(), torch.finfo(torch.float32).min
            ),
            position_ids=trained.position_ids[None],
        ).logits[0]
    expected = full[trained.completion_start - 1 : -1]
    assert (outputs.answer_logits - expected).abs().max() < 1e-4


def test_loss_terms_match_hand_computed_values():
    scores = torch.tensor([0.5, 0.3, 0.2])
    positives = torch.tensor([False, True, True])
    expected = -(math.log(math.exp(6.0) + math.exp(4.0)) - math.log(math.exp(10.0) + math.exp(6.0) + math.exp(4.0)))
    assert contrastive_loss(scores, positives, 0.05).item() == pytest.approx(expected, rel=1e-6)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    targets = torch.tensor([0, 1])
    nll = [-(2.0 - math.log(math.exp(2.0) + 2)), -(0.0 - math.log(2 + math.e))]
    assert next_token_loss(logits, targets).item() == pytest.approx(sum(nll) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="positive"):
        contrastive_loss(scores, torch.zeros(3, dtype=torch.bool), 0.05)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_auxiliary_gradient_reaches_layers_up_to_scoring_layer_only(checkpointing):
    model = tiny_model("mistral", num_layers=5).train()
    layout = build_layout(random_prompt(5, seed=2), query_position_offset=16384, completion=COMPLETION)
    outputs = training_forward(model, plan_attention(layout), 2, 2, gradient_checkpointing=checkpointing)
    contrastive_loss(outputs.scores, torch.tensor([True, False, False, True, False]), 0.05).backward()
    layers = model.model.layers
    for index in (0, 1):
        for name, parameter in layers[index].named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"layer {index} {name}"
    assert (
        layers[2].self_attn.q_proj.weight.grad.abs().sum() > 0
        and layers[2].self_attn.k_proj.weight.grad.abs().sum() > 0
    )
    assert layers[2].self_attn.v_proj.weight.grad is None and layers[2].mlp.up_proj.weight.grad is None
    for layer in layers[3:]:
        assert all(p.grad is None for p in layer.parameters())


def test_one_step_lowers_both_losses(tmp_path, tiny_lm_dir):
    config = tiny_config(tmp_path, tiny_lm_dir, lora_rank=0, aux_weight=1.0, learning_rate=3e-3)
    trainer = Trainer(config, examples=EXAMPLES)
    batch = [trainer.prompts[0], trainer.prompts[1]]
    before = trainer.losses(batch)
    trainer.train_step(iter(batch))
    after = trainer.losses(batch)
    assert sum(float(t.next_token) for t in after) < sum(float(t.next_token) for t in before)
    assert sum(float(t.contrastive) for t in after) < sum(float(t.contrastive) for t in before)


def test_sampling_forces_positives_and_is_seeded():
    example = RankingExample("q", ("p1", "p2", "p3", "p4"), tuple(f"n{i}" for i in range(10)), "unit")
    texts, relevant = sample_candidates(example, 8, 3, random.Random(1), [])
    assert len(texts) == 8 and sum(relevant) == 3 and all(t.startswith("p") == r for t, r in zip(texts, relevant))
    assert sample_candidates(example, 8, 3, random.Random(1), []) == (texts, relevant)
    few = RankingExample("q", ("p",), ("n",), "unit")
    texts, relevant = sample_candidates(few, 5, 3, random.Random(0), ["x1", "x2", "x3", "n", "p"])
    assert sorted(texts) == ["n", "p", "x1", "x2", "x3"] and sum(relevant) == 1
    assert completion_text([2, 7]) == "2, 7]"


def test_training_prompt_ends_with_answer_after_signal_tokens(smollm_tokenizer):
    prompt = build_training_prompt(
        smollm_tokenizer,
        EXAMPLES[1],
        num_candidates=4,
        max_positives=2,
        max_block_tokens=160,
        query_position_offset=16384,
        rng=random.Random(0),
        negative_pool=[],
    )
    layout = prompt.layout
    assert int(prompt.positives.sum()) == 2 and layout.num_documents == 4
    answer = smollm_tokenizer.decode(layout.input_ids[layout.completion_start :].tolist())
    expected = completion_text([k for k, r in enumerate(prompt.positives.tolist()) if r])
    assert answer == expected + smollm_tokenizer.eos_token
    signal = smollm_tokenizer.decode(layout.input_ids[layout.signal_rows(2)].tolist())
    assert signal.endswith("[")


def test_reporting_splits_are_refused():
    with pytest.raises(ValueError, match="reporting split"):
        load_examples(["dl19"])
    with pytest.raises(ValueError, match="unknown training source"):
        load_examples(["nope"])


def test_training_sources_load_from_shared_data():
    require_data("train")
    squad = load_examples(["squad"])
    assert len(squad) == 10570 and all(e.positives and len(e.negatives) == 29 for e in squad[:50])
    dl21 = load_examples(["dl21"])
    assert 0 < len(dl21) <= 53


def test_checkpoint_loads_into_blockrank_and_resume_matches_uninterrupted(tmp_path, tiny_lm_dir):
    straight = Trainer(tiny_config(tmp_path / "a", tiny_lm_dir), examples=EXAMPLES)
    straight.run(show_progress_bar=False)

    interrupted = Trainer(tiny_config(tmp_path / "b", tiny_lm_dir), examples=EXAMPLES)
    interrupted.output.mkdir(parents=True)
    interrupted.train_step(interrupted.prompt_stream())
    interrupted.save_checkpoint()
    resumed = Trainer(tiny_config(tmp_path / "b", tiny_lm_dir), examples=EXAMPLES)
    resumed.run(show_progress_bar=False)
    assert resumed.step == 2
    for name, value in straight.trainable_state().items():
        assert torch.equal(value, resumed.trainable_state()[name]), name

    record = json.loads((straight.output / "blockrank.json").read_text())
    assert (
        record["kind"] == "lora" and record["settings"]["scoring_layer"] == 2 and record["training"]["steps_done"] == 2
    )
    ranker = BlockRank.from_pretrained(str(straight.output))
    assert ranker.engine.scoring_layer == 2
    assert ranker.config.max_block_tokens == straight.config.max_block_tokens  # inference reads blocks as trained
    docs = ["Cats eat meat and fish.", "The stock market fell.", "Paris is in France."]
    straight.model.eval()
    merged = BlockRank(
        straight.model.merge_and_unload(), straight.tokenizer, BlockRankConfig(**model_settings(str(straight.output)))
    )
    assert ranker.score("what do cats eat", docs) == pytest.approx(
        merged.score("what do cats eat", docs), abs=1e-3
    )  # fp16 adapter


def test_resume_refuses_another_configuration(tmp_path, tiny_lm_dir):
    trainer = Trainer(tiny_config(tmp_path, tiny_lm_dir, max_steps=1), examples=EXAMPLES)
    trainer.run(show_progress_bar=False)
    with pytest.raises(ValueError, match="different training configuration"):
        Trainer(dataclasses.replace(tiny_config(tmp_path, tiny_lm_dir), aux_weight=0.5), examples=EXAMPLES).run(
            show_progress_bar=False
        )


def test_config_validation():
    with pytest.raises(ValueError, match="num_candidates"):
        TrainConfig(num_candidates=1)
    with pytest.raises(ValueError, match="lora_rank"):
        TrainConfig(lora_rank=-1)
    with pytest.raises(TypeError):
        TrainConfig(learning_rat=1e-3)


def test_prompt_workers_build_the_same_prompts(tmp_path, tiny_lm_dir):
    inline = Trainer(tiny_config(tmp_path / "a", tiny_lm_dir), examples=EXAMPLES)
    workers = Trainer(tiny_config(tmp_path / "b", tiny_lm_dir, loader_workers=2), examples=EXAMPLES)
    for mine, theirs in zip(inline.prompt_stream(), workers.prompt_stream()):
        assert torch.equal(mine.layout.input_ids, theirs.layout.input_ids) and torch.equal(
            mine.positives, theirs.positives
        )


def test_cli_train_runs_end_to_end(tmp_path, tiny_lm_dir, capsys):
    require_data("train")
    from blockrank_rerank.cli import main

    output = tmp_path / "cli"
    code = main(
        [
            "train",
            "--model",
            str(tiny_lm_dir),
            "--sources",
            "msmarco-small",
            "--output-dir",
            str(output),
            "--max-steps",
            "1",
            "--prompts-per-step",
            "1",
            "--num-candidates",
            "3",
            "--scoring-layer",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0 and "wrote" in capsys.readouterr().out
    assert (output / "adapter_model.safetensors").is_file() and len(
        (output / "log.jsonl").read_text().splitlines()
    ) == 1


def test_jsonl_source_of_your_own(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps({"query": "q", "positives": ["p"], "negatives": ["n1", "n2"]})
        + "\n"
        + json.dumps({"query": "", "positives": ["p"]})
        + "\n"
    )
    examples = load_examples([f"jsonl:{path}"])
    assert examples == [RankingExample("q", ("p",), ("n1", "n2"), f"jsonl:{path}")]


def test_scoring_only_training_runs_and_trains_layers_below_l_star_only(tmp_path, tiny_lm_dir):
    """next_token_weight=0: no layer from L* on runs, no LM head; gradients reach layers 0..L*-1 and L*'s q/k only."""
    config = tiny_config(tmp_path, tiny_lm_dir, lora_rank=0, next_token_weight=0.0, aux_weight=1.0)
    trainer = Trainer(config, examples=EXAMPLES)
    terms = trainer.losses([trainer.prompts[0]])
    assert float(terms[0].next_token) == 0.0 and float(terms[0].contrastive) > 0
    terms[0].total.backward()
    layers = trainer.inner.model.layers
    assert all(p.grad is not None for p in layers[0].parameters()) and all(
        p.grad is not None for p in layers[1].parameters()
    )
    assert layers[2].self_attn.q_proj.weight.grad is not None and layers[2].mlp.up_proj.weight.grad is None
    assert all(p.grad is None for p in layers[3].parameters()) and trainer.inner.lm_head.weight.grad is None
    full = Trainer(tiny_config(tmp_path / "full", tiny_lm_dir, lora_rank=0, aux_weight=1.0), examples=EXAMPLES)
    both = full.losses([full.prompts[0]])[0]
    assert float(both.contrastive) == pytest.approx(float(terms[0].contrastive), rel=1e-5)  # the same scores at L*
    with pytest.raises(ValueError, match="packed"):
        tiny_config(tmp_path, tiny_lm_dir, next_token_weight=0.0, forward="dense")
    with pytest.raises(ValueError, match="nothing to train"):
        tiny_config(tmp_path, tiny_lm_dir, next_token_weight=0.0, aux_weight=0.0)


def test_mixed_list_sizes_are_drawn_per_prompt_and_seeded(tmp_path, tiny_lm_dir):
    examples = [RankingExample(f"q{i}", ("p",), tuple(f"n{i}-{k}" for k in range(12)), "unit") for i in range(8)]
    config = tiny_config(tmp_path, tiny_lm_dir, num_candidates=3, max_candidates=10, max_steps=8)
    first, again = Trainer(config, examples=examples), Trainer(config, examples=examples)
    sizes = [first.prompts[i].layout.num_documents for i in range(16)]
    assert all(3 <= n <= 10 for n in sizes) and len(set(sizes)) > 3
    assert sizes == [again.prompts[i].layout.num_documents for i in range(16)]
    with pytest.raises(ValueError, match="max_candidates"):
        tiny_config(tmp_path, tiny_lm_dir, num_candidates=5, max_candidates=4)


def test_warm_start_loads_an_earlier_adapter_and_refuses_one_that_does_not_fit(tmp_path, tiny_lm_dir):
    earlier = Trainer(tiny_config(tmp_path / "earlier", tiny_lm_dir), examples=EXAMPLES)
    earlier.run(show_progress_bar=False)
    warm = Trainer(
        tiny_config(tmp_path / "warm", tiny_lm_dir, init_adapter=str(tmp_path / "earlier" / "run")), examples=EXAMPLES
    )
    saved = {name.replace(".default", ""): value for name, value in earlier.trainable_state().items()}
    for name, value in warm.trainable_state().items():
        assert torch.allclose(value, saved[name.replace(".default", "")].to(value.dtype), atol=1e-3), name
    with pytest.raises(ValueError, match="does not fit"):
        Trainer(
            tiny_config(tmp_path / "r8", tiny_lm_dir, lora_rank=8, init_adapter=str(tmp_path / "earlier" / "run")),
            examples=EXAMPLES,
        )
    with pytest.raises(ValueError, match="no LoRA adapter"):
        Trainer(tiny_config(tmp_path / "none", tiny_lm_dir, init_adapter=str(tmp_path / "nowhere")), examples=EXAMPLES)


def test_default_sources_leave_the_dev_data_out():
    """dl21 and the scifact-dev claims are dev data: the default training sources never contain them."""
    from blockrank_rerank.training.examples import DEFAULT_SOURCES

    assert "dl21" not in DEFAULT_SOURCES and "scifact-train" not in DEFAULT_SOURCES
    require_data("scifact", "qrels", "train.tsv")
    from blockrank_rerank.evaluation.evaluate import load_dataset

    dev = load_dataset("scifact-dev")
    fit = {e.query for e in load_examples(["scifact-train-fit"])}
    assert len(dev.queries) == 150 and not fit & set(dev.queries.values())
