"""Fine-tuning with the BlockRank objective (docs/design.md §5): data, prompts, objective and the training loop."""

from .examples import DEFAULT_SOURCES, RankingExample, load_examples
from .objective import blockrank_loss, contrastive_loss, next_token_loss, training_forward
from .prompts import TrainingPrompt, build_training_prompt
from .trainer import TrainConfig, Trainer, train

__all__ = [
    "DEFAULT_SOURCES",
    "RankingExample",
    "load_examples",
    "blockrank_loss",
    "contrastive_loss",
    "next_token_loss",
    "training_forward",
    "TrainingPrompt",
    "build_training_prompt",
    "TrainConfig",
    "Trainer",
    "train",
]
