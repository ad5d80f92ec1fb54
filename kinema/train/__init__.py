"""One trainer for every kinema model (bf16 autocast, EMA, accumulation, exact resume)."""

from .trainer import EMA, Trainer, TrainConfig, list_checkpoints, load_checkpoint_model, lr_at, verify_checkpoint

__all__ = ["EMA", "TrainConfig", "Trainer", "list_checkpoints", "load_checkpoint_model", "lr_at", "verify_checkpoint"]
