"""Decoupled distillation of SAM: teacher embeddings store, student encoder training, decoder fine-tuning,
teacher-student mIoU (``litesam distill ...``, ``litesam eval miou``)."""

from .embeddings import EmbeddingStore, embed_images
from .evaluate import evaluate_miou
from .finetune import finetune_decoder
from .train import TrainConfig, train_student

__all__ = [
    "EmbeddingStore",
    "TrainConfig",
    "embed_images",
    "evaluate_miou",
    "finetune_decoder",
    "train_student",
]
