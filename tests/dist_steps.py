"""k training steps of the Trainer on fixed synthetic global batches, in one process or as one rank of a
torchrun run (tests/test_distributed.py starts it both ways):
``python tests/dist_steps.py OUT.pt FIELDS_JSON [BREAK]``.

Rank 0 (or the single process) saves to OUT.pt the losses of every step, and after the first and the last step
every parameter and buffer and the gradients that step applied (averaged over the processes).
BREAK (tests only) injects one of the bugs peers shipped, to show the comparison catches it: ``local`` (the
contrastive loss sees this process's embeddings only) or ``summed`` (gradients summed over the processes,
not averaged: scaled by the world size)."""
import json
import os
import sys

import torch
import torch.distributed as dist

from featdrop import config
from featdrop.data.base import Data
from featdrop.lab.concurrency import synthetic_batch
from featdrop.train import Trainer, distributed
from featdrop.views import draws
from featdrop.views.modality import image_modality

STEPS, BATCH = int(os.environ.get("DIST_STEPS", 3)), 32


def modules(trainer) -> dict:
    return {"encoder": trainer.encoder, "aux": trainer.aux, "viewmaker": trainer.viewmaker,
            "moco": trainer.moco}


def state(trainer) -> dict:
    return {f"{name}.{k}": v.clone() for name, m in modules(trainer).items() if m is not None
            for k, v in m.state_dict().items()}


def grads(trainer) -> dict:
    return {f"{name}.{k}": p.grad.clone() for name, m in modules(trainer).items() if m is not None
            for k, p in m.named_parameters() if p.grad is not None}


def main(out: str, fields: str, broken: str = "") -> None:
    cfg = config.resolve(config.make(**json.loads(fields)))
    world = distributed.init(cfg, cuda=False)
    if broken == "local":
        world.__class__.gather = lambda self, x: x
    elif broken == "summed":
        def summed(self, params):
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
        world.__class__.average_gradients = summed
    trainer = Trainer(cfg, data=Data(image_modality(), None, None, 10, 3), world=world)
    lo, hi = world.rows(BATCH)
    losses, saved = [], {}
    for step in range(STEPS):
        raw = synthetic_batch(BATCH, "cpu", seed=step)                       # the global batch
        labels = torch.randperm(BATCH, generator=torch.Generator().manual_seed(step)) % 10
        g = torch.Generator().manual_seed(1000 + step)
        rows = g if world.size == 1 else draws.Rows(g, BATCH, lo, hi)
        sup = labels[lo:hi] if cfg.supervise else None
        out_step = trainer.step(raw[lo:hi], rows, sup)
        # the global batch's loss: a CE head's term is each process's mean (the trainer averages its
        # statistics over the processes once an epoch)
        losses.append(world.mean({"loss": out_step["loss"]})["loss"].item())
        if step in (0, STEPS - 1):  # every parameter and buffer, and the gradients of that step (still set)
            saved[step + 1] = {"state": state(trainer), "grads": grads(trainer)}
    if world.main:
        torch.save({"losses": losses, "after": saved, "world": world.size}, out)
    if world.size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
