"""The training loop: LoRA (peft) or full fine-tuning with the BlockRank objective, resumable and seeded.

Output directory layout (`TrainConfig.output_dir`):
  adapter_config.json, adapter_model.safetensors   the LoRA adapter (or a full model with `lora_rank=0`)
  blockrank.json                                   base model, scoring settings and the training record
  log.jsonl                                        one line per optimizer step (losses, lr, time)
  checkpoint/                                      trainable weights, optimizer and step, for `resume`
`BlockRank.from_pretrained(output_dir)` loads the result directly (base + adapter, merged).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from tqdm.auto import tqdm

from ..attention import ATTENTION_FUNCTIONS, plan_attention, resolve_backend
from ..config import DTYPES, default_scoring_layer
from ..forward import decoder_of
from ..loading import CHECKPOINT_FILE, EMBEDDED_BASE, load_model_and_tokenizer
from .examples import DEFAULT_SOURCES, RankingExample, load_examples
from .objective import LossTerms, batched_dense_forward, blockrank_loss, training_forward
from .prompts import TrainingPrompt, build_training_prompt

logger = logging.getLogger(__name__)

SAVE_DTYPES = ("float32", "bfloat16", "float16")  # dtypes a checkpoint's merged weights may be stored in
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TRAINABLE_BACKENDS = tuple(
    name for name in ATTENTION_FUNCTIONS if name != "triton"
)  # the Triton kernel is forward-only


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored in blockrank.json beside the result."""

    output_dir: str = "runs/train"
    model: str = EMBEDDED_BASE  # base model: Hugging Face id, local path or the embedded SmolLM2-135M-Instruct
    sources: tuple[str, ...] = DEFAULT_SOURCES  # training sources (training/examples.py); reporting splits refused
    num_candidates: int = 30  # documents per prompt (reference: 30), positives forced in, order shuffled
    # mixed list sizes: each prompt draws its N uniformly from num_candidates..max_candidates, so the model is
    # trained at the list sizes it is read at (None: every prompt has num_candidates)
    max_candidates: Optional[int] = None
    max_positives: int = 3  # most positives placed in one prompt
    max_block_tokens: int = 160  # token cap per block while training (reference: 160)
    scoring_layer: Optional[int] = None  # L* (None: 5/8 of the depth, as at inference)
    num_signal_tokens: int = 2
    query_position_offset: int = 16384
    aux_weight: float = 0.1  # λ of the auxiliary InfoNCE loss
    # weight of the next-token loss on the answer; 0 trains only what scoring reads: layers 0..L*-1 run, no layer
    # above and no LM head (packed forward)
    next_token_weight: float = 1.0
    temperature: float = 0.05  # τ of the InfoNCE loss
    lora_rank: int = 16  # 0: full fine-tuning
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_all_layers: bool = False  # False: LoRA on layers 0..L* only, the layers inference runs
    # warm start: a LoRA checkpoint of the same base, rank and layers (a `blockrank train` output directory, or
    # embedded:smollm2-135m-blockrank for the shipped adapter) whose weights the new adapter starts from
    init_adapter: Optional[str] = None
    learning_rate: float = 1e-4  # reference full fine-tune of Mistral-7B: 3e-6
    weight_decay: float = 0.0
    warmup_steps: int = 20
    epochs: float = 1.0  # passes over the examples (fractions allowed)
    max_steps: Optional[int] = None  # optimizer steps; overrides epochs
    prompts_per_step: int = 4  # gradient accumulation: prompts per optimizer step
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = True  # non-reentrant, compatible with the auxiliary loss (packed forward only)
    dtype: str = "float32"  # "bfloat16": autocast on CUDA (weights stay fp32)
    device: str = "cpu"
    seed: int = 0
    save_every: int = 100  # optimizer steps between resumable checkpoints
    max_minutes: Optional[float] = None  # stop (and save) after this much wall-clock time
    resume: bool = True  # continue from output_dir/checkpoint when it exists
    save_dtype: str = "float16"  # dtype of the saved adapter weights
    loader_workers: int = 0  # processes building prompts ahead of the GPU (0: in the training loop)
    attention_backend: str = (
        "torch"  # packed forward's backend from the registry (attention.py); "triton" has no backward
    )
    forward: str = (
        "packed"  # "packed": block-sparse stream per prompt (linear in N); "dense": all prompts of a step in one
    )
    # padded batch through the model's own forward with the explicit 4-D mask (faster on a GPU for small models)

    def __post_init__(self) -> None:
        positive_ints = (
            "num_candidates",
            "max_positives",
            "max_block_tokens",
            "num_signal_tokens",
            "prompts_per_step",
            "save_every",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.max_candidates is not None and (
            not isinstance(self.max_candidates, int)
            or isinstance(self.max_candidates, bool)
            or self.max_candidates < self.num_candidates
        ):
            raise ValueError(
                f"max_candidates must be None or an int >= num_candidates ({self.num_candidates}), "
                f"got {self.max_candidates!r}"
            )
        if self.init_adapter is not None and self.lora_rank == 0:
            raise ValueError("init_adapter warm-starts a LoRA adapter; it needs lora_rank > 0")
        if self.num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2 (a positive and a negative), got {self.num_candidates}")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ValueError(f"lora_rank must be an int >= 0, got {self.lora_rank!r}")
        for name in ("learning_rate", "temperature", "epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.aux_weight < 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.next_token_weight < 0:
            raise ValueError("aux_weight, next_token_weight, weight_decay and warmup_steps must be >= 0")
        if self.next_token_weight == 0 and self.aux_weight == 0:
            raise ValueError("next_token_weight and aux_weight are both 0: nothing to train")
        if self.next_token_weight == 0 and self.forward != "packed":
            raise ValueError("next_token_weight=0 (scoring layers only) needs forward='packed'")
        if self.attention_backend not in TRAINABLE_BACKENDS:
            raise ValueError(
                f"attention_backend must be one of {TRAINABLE_BACKENDS} (backends with a backward), "
                f"got {self.attention_backend!r}"
            )
        if self.forward not in ("packed", "dense"):
            raise ValueError(f"forward must be 'packed' or 'dense', got {self.forward!r}")
        if not isinstance(self.loader_workers, int) or self.loader_workers < 0:
            raise ValueError(f"loader_workers must be an int >= 0, got {self.loader_workers!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be None or >= 1, got {self.max_steps!r}")
        if self.dtype not in ("float32", "bfloat16") or self.save_dtype not in SAVE_DTYPES:
            raise ValueError(
                f"dtype must be float32 or bfloat16 and save_dtype one of {SAVE_DTYPES}, "
                f"got {self.dtype!r}, {self.save_dtype!r}"
            )
        object.__setattr__(self, "sources", tuple(self.sources))


def prompt_order(num_examples: int, total_prompts: int, seed: int) -> list[int]:
    """Example index of every prompt: whole seeded permutations, one per epoch, cut to `total_prompts`."""
    order: list[int] = []
    epoch = 0
    while len(order) < total_prompts:
        permutation = list(range(num_examples))
        random.Random(seed * 1_000_003 + epoch).shuffle(permutation)
        order.extend(permutation)
        epoch += 1
    return order[:total_prompts]


def negative_pools(examples: list[RankingExample]) -> dict[str, list[str]]:
    """Every passage of each source, for filling prompts whose example has too few negatives."""
    pools: dict[str, dict[str, None]] = {}
    for example in examples:
        pool = pools.setdefault(example.source, {})
        pool.update(dict.fromkeys(example.positives))
        pool.update(dict.fromkeys(example.negatives))
    return {source: list(pool) for source, pool in pools.items()}


def attach_lora(model: Any, config: TrainConfig, scoring_layer: int) -> Any:
    """The peft-wrapped model with LoRA on every projection of layers 0..L* (all layers with `lora_all_layers`)."""
    from peft import LoraConfig, get_peft_model

    num_layers = len(decoder_of(model).layers)
    layers = list(range(num_layers)) if config.lora_all_layers else list(range(scoring_layer + 1))
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(LORA_TARGETS),
        layers_to_transform=layers,
        bias="none",
    )
    return get_peft_model(model, lora)


def warm_start(model: Any, adapter: str) -> None:
    """Load the LoRA weights of `adapter` (a checkpoint directory, or the shipped embedded adapter) into `model`.

    The adapter must have been trained on the same layers with the same rank: every LoRA weight of `model`
    must be found, with its shape, or this is a ValueError (a silent partial start would mislead).
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from ..loading import EMBEDDED_TRAINED, TRAINED_ADAPTER_DIR

    folder = TRAINED_ADAPTER_DIR if adapter == EMBEDDED_TRAINED else Path(adapter)
    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        raise ValueError(f"init_adapter {adapter!r}: no LoRA adapter at {path}")
    weights = load_file(str(path))
    mine = {name: p for name, p in model.named_parameters() if "lora_" in name}
    shapes = {name.replace(".default", ""): tuple(p.shape) for name, p in mine.items()}
    theirs = {name: tuple(w.shape) for name, w in weights.items()}
    if shapes != theirs:
        missing = sorted(set(shapes) - set(theirs))[:3]
        extra = sorted(set(theirs) - set(shapes))[:3]
        raise ValueError(
            f"init_adapter {adapter!r} does not fit this LoRA configuration (rank, target modules, layers): "
            f"missing {missing}, unexpected {extra}, or other shapes"
        )
    result = set_peft_model_state_dict(model, weights)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"init_adapter {adapter!r}: weights not loaded: {result.unexpected_keys[:3]}")
    logger.info("warm start from %s (%d LoRA tensors)", folder, len(weights))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def cuda_attention_kernels(device: torch.device, dense: bool) -> Any:
    """Which SDPA kernels training may use on CUDA (no restriction elsewhere).

    The dense forward gets only the memory-efficient kernel (masks, backward, O(T) memory; never the O(T^2)
    math fallback). The packed forward excludes cuDNN attention, whose backward failed on a lent H200
    (`mha_graph.execute(...).is_good()`, torch 2.11 + cu130) for the per-block shapes of a training prompt.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if dense:
        return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION])
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


PLAIN_SCALARS = (bool, int, float, str, type(None), torch.Tensor)
STATE_KEYS = {
    "step": int,
    "seconds": (int, float),
    "weights": dict,
    "optimizer": dict,
    "scheduler": dict,
    "config": dict,
}


def require_plain(value: Any, where: str) -> None:
    """TypeError unless `value` is tensors, numbers, strings, None and lists/tuples/dicts of them: what
    `weights_only` loads."""
    if isinstance(value, dict):
        for key, item in value.items():
            require_plain(key, where)
            require_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            require_plain(item, f"{where}[{index}]")
    elif not isinstance(value, PLAIN_SCALARS):
        raise TypeError(
            f"{where} holds a {type(value).__name__}; "
            "a checkpoint may hold only tensors, numbers, strings, lists and dicts"
        )


def read_checkpoint_state(path: Path, device: torch.device) -> dict[str, Any]:
    """The training state in `path`, unpickled with `weights_only=True` (no code runs); anything else is a
    ValueError naming it."""
    advice = "delete it or use another --output-dir"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (
        Exception
    ) as error:  # refused globals, a torn or foreign file: all mean "not a checkpoint this library wrote"
        raise ValueError(
            f"{path} is not a training checkpoint this library wrote: "
            f"torch refuses to unpickle it ({load_failure(error)}); {advice}"
        ) from None
    if (
        not isinstance(state, dict)
        or any(not isinstance(state.get(k), t) or isinstance(state.get(k), bool) for k, t in STATE_KEYS.items())
        or state["step"] < 0
    ):
        raise ValueError(
            f"{path} is not a training checkpoint of this version (expected the keys {sorted(STATE_KEYS)}); {advice}"
        )
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["weights"].items()):
        raise ValueError(f"{path} holds weights that are not named tensors; {advice}")
    return state


def load_failure(error: Exception) -> str:
    """The sentence of a `torch.load` error that says what was refused (never its advice to retry with
    weights_only=False)."""
    text = str(error)
    refused = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    first = (
        refused.group(1)
        if refused
        else next((line for line in text.splitlines() if line.strip()), type(error).__name__)
    )
    return re.split(r"\.(?:\s|$)", first.strip(), maxsplit=1)[0][:200]


def restart_log(path: Path, step: int) -> None:
    """Keep only the log records of steps 1..`step` (the checkpointed ones), once each, dropping a torn tail; atomic."""
    kept: dict[int, str] = {}
    if step > 0 and path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
            number = log_step(line)
            if number is not None and 1 <= number <= step:
                kept[number] = line
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as f:
        f.writelines(kept[n] + "\n" for n in sorted(kept))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def log_step(line: str) -> Optional[int]:
    """The step of one log.jsonl line, or None for a torn or foreign line."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


class TrainingPrompts(torch.utils.data.Dataset):
    """The prompt at each position of the run's order; its candidates depend only on (seed, position)."""

    def __init__(
        self, tokenizer: Any, examples: list[RankingExample], order: list[int], config: TrainConfig, start: int = 0
    ) -> None:
        self.tokenizer, self.examples, self.order, self.config, self.start = tokenizer, examples, order, config, start
        self.pools = negative_pools(examples)

    def starting_at(self, start: int) -> "TrainingPrompts":
        """The same prompts from position `start` on (for resuming)."""
        view = copy.copy(self)
        view.start = start
        return view

    def __len__(self) -> int:
        return len(self.order) - self.start

    def __getitem__(self, index: int) -> TrainingPrompt:
        position = self.start + index
        example = self.examples[self.order[position]]
        rng = random.Random(self.config.seed * 1_000_003 + position)
        low, high = self.config.num_candidates, self.config.max_candidates
        return build_training_prompt(
            self.tokenizer,
            example,
            num_candidates=low if high is None else rng.randint(low, high),
            max_positives=self.config.max_positives,
            max_block_tokens=self.config.max_block_tokens,
            query_position_offset=self.config.query_position_offset,
            rng=rng,
            negative_pool=self.pools[example.source],
        )


class Trainer:
    """Holds the model, data and optimizer of one run; `run()` trains and saves."""

    def __init__(
        self,
        config: TrainConfig,
        examples: Optional[list[RankingExample]] = None,
        model_and_tokenizer: Optional[tuple[Any, Any]] = None,
    ) -> None:
        self.config = config
        self.output = Path(config.output_dir)
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        if model_and_tokenizer is None:
            model, self.tokenizer, _ = load_model_and_tokenizer(config.model, torch.float32, config.device)
        else:
            model, self.tokenizer = model_and_tokenizer
            model = model.to(config.device)
        self.device = torch.device(config.device)
        self.num_layers = len(decoder_of(model).layers)
        self.scoring_layer = (
            default_scoring_layer(self.num_layers) if config.scoring_layer is None else config.scoring_layer
        )
        if not 0 <= self.scoring_layer < self.num_layers:
            raise ValueError(f"scoring_layer={self.scoring_layer} but the model has {self.num_layers} layers")
        self.backend = resolve_backend(config.attention_backend, self.device)
        if config.lora_rank > 0:
            self.model = attach_lora(model, config, self.scoring_layer)
            if config.init_adapter is not None:
                warm_start(self.model, config.init_adapter)
            self.inner = self.model.base_model.model  # the causal LM with LoRA layers injected
        else:
            self.model = self.inner = model
        self.model.train()
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.examples = examples if examples is not None else load_examples(config.sources)
        self.total_steps = config.max_steps or max(
            1, math.ceil(config.epochs * len(self.examples) / config.prompts_per_step)
        )
        self.prompts = TrainingPrompts(
            self.tokenizer,
            self.examples,
            prompt_order(len(self.examples), self.total_steps * config.prompts_per_step, config.seed),
            config,
        )
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.warmup_steps, self.total_steps)
        )
        self.step = 0
        self.seconds = 0.0

    def losses(self, prompts: list[TrainingPrompt]) -> list[LossTerms]:
        """Loss terms of each prompt under the current weights (one padded batch with `forward="dense"`)."""
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.dtype == "bfloat16")
        with autocast, cuda_attention_kernels(self.device, dense=self.config.forward == "dense"):
            if self.config.forward == "dense":
                outputs = batched_dense_forward(
                    self.inner, [p.layout for p in prompts], self.scoring_layer, self.config.num_signal_tokens
                )
            else:
                outputs = [
                    training_forward(
                        self.inner,
                        plan_attention(p.layout, 8192, self.device),
                        self.scoring_layer,
                        self.config.num_signal_tokens,
                        backend=self.backend,
                        gradient_checkpointing=self.config.gradient_checkpointing,
                        scoring_only=self.config.next_token_weight == 0,
                    )
                    for p in prompts
                ]
        return [
            blockrank_loss(
                o,
                p.positives,
                aux_weight=self.config.aux_weight,
                temperature=self.config.temperature,
                next_token_weight=self.config.next_token_weight,
            )
            for o, p in zip(outputs, prompts)
        ]

    def train_step(self, prompts: Iterator[TrainingPrompt]) -> dict[str, float]:
        """One optimizer step over the next `prompts_per_step` prompts; returns the mean loss terms."""
        per_step = self.config.prompts_per_step
        batch = [next(prompts) for _ in range(per_step)]
        groups = [batch] if self.config.forward == "dense" else [[p] for p in batch]  # packed: backward per prompt
        totals = {"loss": 0.0, "ntp": 0.0, "aux": 0.0}
        for group in groups:
            terms = self.losses(group)
            with cuda_attention_kernels(self.device, dense=self.config.forward == "dense"):  # checkpoint recompute
                (sum(t.total for t in terms) / per_step).backward()
            totals["loss"] += sum(float(t.total.detach()) for t in terms) / per_step
            totals["ntp"] += sum(float(t.next_token.detach()) for t in terms) / per_step
            totals["aux"] += sum(float(t.contrastive.detach()) for t in terms) / per_step
        torch.nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return totals

    def prompt_stream(self) -> Iterator[TrainingPrompt]:
        """Prompts from the current step on, built by `loader_workers` processes (or inline)."""
        dataset = self.prompts.starting_at(self.step * self.config.prompts_per_step)
        if self.config.loader_workers == 0:
            return iter(dataset[i] for i in range(len(dataset)))
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, shuffle=False, num_workers=self.config.loader_workers, prefetch_factor=8
        )
        return iter(loader)

    def run(self, show_progress_bar: bool = True) -> Path:
        """Train to `total_steps` (or `max_minutes`), checkpointing; save the final result and return its directory."""
        self.output.mkdir(parents=True, exist_ok=True)
        resumed = self.config.resume and self.load_checkpoint()
        restart_log(self.output / "log.jsonl", self.step if resumed else 0)
        started = time.perf_counter() - self.seconds
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="BlockRank training",
            unit="step",
            disable=not show_progress_bar,
        )
        prompts = self.prompt_stream()
        with open(self.output / "log.jsonl", "a", encoding="utf-8") as log:
            while self.step < self.total_steps:
                losses = self.train_step(prompts)
                self.seconds = time.perf_counter() - started
                record = {
                    "step": self.step,
                    **{k: round(v, 5) for k, v in losses.items()},
                    "lr": self.scheduler.get_last_lr()[0],
                    "seconds": round(self.seconds, 2),
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.update(1)
                bar.set_postfix(ntp=f"{losses['ntp']:.3f}", aux=f"{losses['aux']:.3f}")
                out_of_time = self.config.max_minutes is not None and self.seconds >= 60 * self.config.max_minutes
                if self.step % self.config.save_every == 0 or out_of_time:
                    self.save_checkpoint()
                if out_of_time:
                    logger.warning(
                        "stopping at step %d of %d: max_minutes=%s reached",
                        self.step,
                        self.total_steps,
                        self.config.max_minutes,
                    )
                    break
        bar.close()
        self.save_checkpoint()
        self.save_result()
        return self.output

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu() for name, p in self.model.named_parameters() if p.requires_grad}

    def save_checkpoint(self) -> None:
        """Trainable weights, optimizer, scheduler and step in output_dir/checkpoint (atomic replace)."""
        folder = self.output / "checkpoint"
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.step,
            "seconds": self.seconds,
            "weights": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "config": dataclasses.asdict(self.config),
        }
        require_plain(state, "checkpoint state")
        torch.save(state, folder / "state.pt.tmp")
        (folder / "state.pt.tmp").replace(folder / "state.pt")

    def load_checkpoint(self) -> bool:
        """Continue from output_dir/checkpoint when present; a checkpoint of another configuration is refused."""
        path = self.output / "checkpoint" / "state.pt"
        if not path.is_file():
            return False
        state = read_checkpoint_state(path, self.device)
        ignored = {
            "max_minutes",
            "resume",
            "max_steps",
            "save_every",
            "output_dir",
            "device",
            "epochs",
            "attention_backend",
        }
        mine = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in ignored}
        theirs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in state["config"].items() if k not in ignored}
        if mine != theirs:
            changed = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise ValueError(
                f"{path} was written by a different training configuration (differs in {changed}); "
                "use another output_dir"
            )
        parameters = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        weights = state["weights"]
        if set(weights) != set(parameters) or any(weights[n].shape != p.shape for n, p in parameters.items()):
            raise ValueError(
                f"{path} holds weights that do not fit this model's trainable parameters; "
                "delete it or use another --output-dir"
            )
        with torch.no_grad():
            for name, value in weights.items():
                parameters[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.seconds = state["step"], float(state["seconds"])
        logger.info("resumed %s at step %d", self.output, self.step)
        return True

    def save_result(self) -> None:
        """The adapter (or full model) and blockrank.json, loadable by `BlockRank.from_pretrained(output_dir)`."""
        save_dtype = DTYPES[self.config.save_dtype]
        if self.config.lora_rank > 0:
            from peft import get_peft_model_state_dict
            from safetensors.torch import save_file

            adapter = self.model.peft_config["default"]
            adapter.base_model_name_or_path = self.config.model
            adapter.save_pretrained(self.output)
            state = get_peft_model_state_dict(self.model, save_embedding_layers=False)
            weights = {k: v.detach().to("cpu", save_dtype).contiguous() for k, v in state.items()}
            save_file(weights, str(self.output / "adapter_model.safetensors"))
        else:
            self.model.to(save_dtype).save_pretrained(self.output)
            self.tokenizer.save_pretrained(self.output)
            self.model.to(torch.float32)
        record = {
            "format": "blockrank-checkpoint/1",
            "kind": "lora" if self.config.lora_rank > 0 else "full",
            "base_model": self.config.model if self.config.lora_rank > 0 else None,
            "settings": {
                "scoring_layer": self.scoring_layer,
                "num_signal_tokens": self.config.num_signal_tokens,
                "query_position_offset": self.config.query_position_offset,
                "max_block_tokens": self.config.max_block_tokens,
            },
            "training": {
                **dataclasses.asdict(self.config),
                "steps_done": self.step,
                "total_steps": self.total_steps,
                "prompts_seen": self.step * self.config.prompts_per_step,
                "examples": len(self.examples),
                "seconds": round(self.seconds, 1),
                "device": str(self.device),
                "torch": torch.__version__,
            },
        }
        (self.output / CHECKPOINT_FILE).write_text(json.dumps(record, indent=2) + "\n")


def train(config: TrainConfig, show_progress_bar: bool = True) -> Path:
    """Train with `config` and return the output directory (loadable by `BlockRank.from_pretrained`)."""
    return Trainer(config).run(show_progress_bar=show_progress_bar)
