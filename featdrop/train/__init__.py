"""Training: the trainer (the min–max step and the epoch loop), the per-epoch monitor with the viewmaker
game's health, checkpoints and resume, the final evaluation, and ``pretrain``, which runs all of it in a
locked run directory."""
from .run import load_run, pretrain
from .trainer import Trainer

__all__ = ["Trainer", "load_run", "pretrain"]
