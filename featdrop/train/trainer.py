"""SimCLR pretraining with expert or viewmaker views: the min–max step and the epoch loop.

Viewmaker training is an alternating min–max (Tamkin et al. 2021), written as a plain loop: per batch,
(1) an encoder step on fresh views with the viewmaker frozen, then (2) a viewmaker step that *maximises*
the same loss on new views (fresh noise) with the encoder's weights frozen. Both passes run the encoder's
BatchNorm in train mode, as the reference did. ``game="simultaneous"`` plays the same min–max in one pass:
one set of views, one forward and one backward, the viewmaker's gradients negated (``simultaneous_step``).
Supervised objectives (``supervise`` set: SupCon, spread, the class-conditional autoencoder) and MoCo (a
momentum encoder and a queue, ``featdrop.moco``) share the loop; supervised labels come with the batch. Under
torchrun each process trains on its rows of the global batch (``featdrop.train.distributed``).

All randomness of epoch e comes from a generator seeded by (seed, e), so on a CPU an interrupted-then-resumed
run ends with the same numbers as an uninterrupted one (``featdrop.train.checkpoint``). Inside an epoch
nothing waits for the device: losses and health statistics accumulate as device tensors, and the
non-finite check is read once, at the end of the epoch, before any checkpoint is written.
"""
from __future__ import annotations

import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .. import config as cfgmod
from .. import device as devmod
from .. import losses, probe
from ..config import Config
from ..data.base import Data
from ..errors import ConfigError, NonFiniteLossError
from ..moco import MomentumEncoder
from ..models import Decoder, build_encoder
from ..views import draws, modality
from ..views.viewmaker import Viewmaker
from ..viz.plots import VM_STEP_LOSS, vm_step_loss
from . import checkpoint, distributed, tracking
from .monitor import MONITOR_TRAIN, Monitor, positive_accuracy

PROGRESS_EVERY = 25  # steps between progress-bar updates (each reads the loss: a sync)


def epoch_line(row: dict, epochs: int) -> str:
    """One line per epoch: the loss, speed, kNN on both labels and the game's health ('–' for a label the
    run does not have)."""
    def f(key, label):
        v = row.get(key, "absent")
        return "" if v == "absent" else f"  {label} {'–' if v is None else f'{v:.3f}'}"

    # the viewmaker's number with the loss curves' sign and name: L on its step, not the stored −L
    vm = f"  {VM_STEP_LOSS} {vm_step_loss(row):.3f}" if "viewmaker_loss" in row else ""
    return (f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.3f}{vm}  "
            f"{row['images_per_s']:.0f} img/s{f('knn_main', 'kNN main')}{f('knn_alt', 'alt')}"
            f"{f('pos_acc', 'pos_acc')}{f('alt_destroyed', 'alt_destroyed')}"
            f"{f('main_destroyed', 'main_destroyed')}{f('overlay_budget_share', 'overlay_share')}")


def say(line: str) -> None:
    """A progress line on stdout and, inside a notebook kernel (papermill, JupyterLab), also on the terminal
    that started it, so papermill shows it without --log-output; once in the notebook either way.

    ipykernel captures the kernel's file descriptors 1 and 2 into the notebook as well as echoing them to
    that terminal, so a line written to sys.__stderr__ appeared twice in out.ipynb (measured). While it
    captures, ``sys.stderr.fileno()`` is its copy of the original stderr, which reaches the terminal alone;
    a kernel that does not capture (pytest's, Windows) leaves sys.__stderr__ to the terminal."""
    print(line, flush=True)
    if sys.stdout is sys.__stdout__:
        return
    for stream in (sys.stderr, sys.__stderr__):  # ipykernel capturing: the copy; else the process's stderr
        try:
            os.write(stream.fileno(), (line + "\n").encode(errors="replace"))
            return
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: a kernel not capturing
            continue


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 100_003 + epoch + 1)


class Trainer:
    def __init__(self, cfg: Config, data: Data | None = None, world: distributed.World | None = None):
        """``data``: already-loaded data (the benchmark passes synthetic batches); default: load it.
        ``world``: this process's place in a torchrun run (default: a single process)."""
        self.cfg = cfg = cfgmod.resolve(cfg)
        self.world = world or distributed.World()
        self.device = self.world.device(devmod.resolve(cfg.device, field="config field 'device'"))
        self.cuda = self.device.type == "cuda"
        self.data = data if data is not None else modality.load(cfg, self.device)
        if self.data.train is not None:  # the kNN monitor votes among its training items: k cannot exceed it
            most = min(len(self.data.train.labels), MONITOR_TRAIN)
            if cfg.knn_k > most:
                raise ConfigError(f"config field 'knn_k' = {cfg.knn_k} is invalid: allowed at most {most}, "
                                  f"the training items the kNN monitor votes among (min(training items, "
                                  f"{MONITOR_TRAIN}))")
        m, objective = self.data.modality, losses.OBJECTIVES[cfg.loss]
        with torch.random.fork_rng(devices=[]):  # weights from the seed, global RNG untouched
            torch.manual_seed(cfg.seed)
            self.encoder = build_encoder(cfg.encoder, m.in_channels, cfg.embedding_dim, cfg.projection_head,
                                         audio=m.audio, image_size=cfg.image_size or 32).to(self.device)
            self.viewmaker = None
            if cfg.views == "viewmaker":
                self.viewmaker = Viewmaker(m.in_channels, cfg.budget, cfg.num_res_blocks, cfg.viewmaker_width,
                                           clamp=m.clamp if cfg.clamp else None).to(self.device)
        # supervised heads, trained with the encoder: a label-smoothed CE head and the autoencoder's decoder
        n_sup = {None: 0, "coarse": 2, "main": self.data.num_classes,
                 "alt": self.data.num_alt_classes}[cfg.supervise]
        aux = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            if objective.ce_head or cfg.ce_weight:
                aux["ce"] = nn.Linear(self.encoder.feature_dim, n_sup)
            if objective.decoder:
                aux["decoder"] = Decoder(self.encoder.feature_dim, m.in_channels,
                                         size=64 if m.audio else cfg.image_size)
        self.aux = nn.ModuleDict(aux).to(self.device)
        self.moco = None  # MoCo's key encoder and queue (featdrop.moco), for a queue objective
        if objective.queue:
            splits = max(1, cfg.moco_bn_splits // self.world.size)  # this process's share of the groups
            self.moco = MomentumEncoder(self.encoder, cfg.moco_queue, cfg.embedding_dim, cfg.moco_momentum,
                                        splits, cfg.seed).to(self.device)
        if self.world.size > 1 and cfg.sync_batchnorm:  # the global batch's statistics, as in one process
            self.encoder = distributed.sync_batchnorm(self.encoder, self.cuda)
            self.aux = distributed.sync_batchnorm(self.aux, self.cuda)
        fused = dict(fused=True) if self.cuda else {}  # one kernel per optimiser step on CUDA
        self.opt_params = [*self.encoder.parameters(), *self.aux.parameters()]
        self.opt = torch.optim.SGD(self.opt_params, lr=cfg.lr,
                                   momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
        self.vm_opt = (torch.optim.Adam(self.viewmaker.parameters(), lr=cfg.viewmaker_lr, **fused)
                       if self.viewmaker else None)
        if cfg.channels_last:  # faster convolutions: cuDNN on tensor cores, oneDNN on a CPU (measured: docs)
            self.encoder.to(memory_format=torch.channels_last)
            if self.viewmaker:
                self.viewmaker.to(memory_format=torch.channels_last)
            if self.moco:
                self.moco.to(memory_format=torch.channels_last)
        self.vm_fn = self._compiled_viewmaker()
        self.amp = self.cuda  # bf16 autocast on CUDA
        self.history: list[dict] = []
        self.epoch = 0
        # the wall time of the processes before this one (set by a resume), and when this one started
        self.wall_prior, self.wall_start = 0.0, time.perf_counter()
        self.oracles: dict = {}  # label → featdrop.oracles.store.Oracle, set by pretrain when cfg.oracles
        self.tracker = None      # a TensorBoard or WandB tracker (train.tracking), set by pretrain
        self.monitor = Monitor(self)

    def _compiled_viewmaker(self):
        """compile: the viewmaker only. Its noise comes in as tensors, so it traces without graph breaks;
        compiling the encoder made the expert step slower on an H100 (9,538 → 6,237 img/s) and gained nothing
        on a 2-core CPU. The compiled viewmaker wins in the benchmark's isolated step on the CPU (1.27×) but
        made whole quick runs slower (docs/benchmarks.md), so it is off by default."""
        if self.cfg.compile and self.viewmaker is not None:
            return torch.compile(self.viewmaker)
        elif self.cfg.compile:
            warnings.warn("compile=True is a no-op for expert views: compiling the encoder made the step "
                          "slower on an H100; only the viewmaker is compiled", stacklevel=3)
        return self.viewmaker

    # ------------------------------------------------------------------ one step
    def autocast(self):
        return devmod.autocast(self.device, self.amp)

    def cl(self, x):
        """x in the models' memory format: channels_last unless the config turns it off."""
        return devmod.channels_last(x, self.cfg.channels_last)

    def loss(self, x1, x2, labels=None, clean=None) -> tuple[torch.Tensor, dict]:
        """The objective on two views (encoder inputs) and its statistics (detached device tensors).
        ``labels``: the batch's supervised labels; ``clean``: the clean encoder input (the decoder's
        target)."""
        c = self.cfg
        stats: dict[str, torch.Tensor] = {}
        if self.moco is not None:
            return self.moco_loss(x1, x2, stats)
        with self.autocast():
            (p1, z1), (p2, z2) = (self.encoder.embed(self.cl(x))
                                  for x in (x1, x2))  # pooled, (B, D); under torchrun this process's rows
        total = torch.zeros((), device=self.device)
        if losses.OBJECTIVES[c.loss].term is not None:
            # every process's embeddings, with their gradient: the global batch's negatives (distributed)
            z1, z2, every = self.world.gather(z1), self.world.gather(z2), self.world.gather_labels(labels)
            total = losses.contrastive_loss(c.loss, z1, z2, c, every)
            stats["pos_acc"] = positive_accuracy(z1.detach(), z2.detach())
        if "ce" in self.aux:  # mean over both views
            ce = sum(losses.smoothed_cross_entropy(self.aux["ce"](p.float()), labels) for p in (p1, p2)) / 2
            total = total + (1.0 if losses.OBJECTIVES[c.loss].ce_head else c.ce_weight) * ce
            stats["ce_loss"] = ce.detach()
        if "decoder" in self.aux:  # reconstruct the clean input from each view's pooled features
            rec = sum(losses.reconstruction_loss(self.aux["decoder"](p.float()), clean) for p in (p1, p2)) / 2
            total = total + rec
            stats["recon_loss"] = rec.detach()
        return total, stats

    def moco_loss(self, x1, x2, stats: dict) -> tuple[torch.Tensor, dict]:
        """MoCo: queries of view 1 from the encoder, keys of view 2 from the momentum encoder, negatives from
        the queue. The loss is per query (each process's mean; averaged gradients make it the global batch's);
        the keys wait in ``moco_keys`` for the end of the step (``step`` enqueues them)."""
        with self.autocast():
            q = self.encoder(self.cl(x1))                   # (B, D)
            k = self.moco.keys(self.cl(x2))                 # (B, D): no gradient to the key encoder
        total = losses.contrastive_loss(self.cfg.loss, q, k, self.cfg, queue=self.moco.queue)
        self.moco_keys = k.detach()
        stats["pos_acc"] = positive_accuracy(self.world.gather(q.detach()), self.world.gather(k.detach()))
        return total, stats

    def views(self, raw, g, grad: bool):
        """Two views (encoder inputs) of a raw batch. The viewmaker makes both in one call on the
        stacked 2B batch, its noise drawn here, outside the (optionally compiled) network."""
        m = self.data.modality
        r1, r2 = m.pair(raw)
        if self.viewmaker is None:
            return m.expert(r1, g), m.expert(r2, g)
        x = torch.cat([m.base(r1), m.base(r2)])                      # (2B, C, S, S)
        noise = self.viewmaker.draw_noise(x, draws.stacked(g, 2))  # both views' noise in one draw
        with torch.set_grad_enabled(grad), self.autocast():
            if self.cuda:  # one launch sequence for both views
                return m.to_encoder(self.vm_fn(self.cl(x), noise=noise)).chunk(2)
            # on a CPU two B-batch calls on the same noise are faster (measured) and give the same views
            halves = zip(x.chunk(2), zip(*(n.chunk(2) for n in noise)))
            return tuple(m.to_encoder(self.vm_fn(self.cl(xh), noise=list(nh))) for xh, nh in halves)

    def encoder_step(self, x1, x2, labels=None, clean=None) -> dict:
        """One SGD step of the encoder (and supervised heads) on two views: min over θ of L."""
        loss, stats = self.loss(x1, x2, labels, clean)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.world.average_gradients(self.opt_params)
        self.opt.step()
        return {"loss": loss.detach(), **stats}

    def viewmaker_step(self, raw, g, labels=None, clean=None) -> torch.Tensor:
        """One Adam step of the viewmaker on fresh views, encoder weights frozen: max over φ of L."""
        self.encoder.requires_grad_(False)
        self.aux.requires_grad_(False)
        vm_loss = -self.loss(*self.views(raw, g, grad=True), labels, clean)[0]
        self.vm_opt.zero_grad(set_to_none=True)
        vm_loss.backward()
        self.world.average_gradients(self.viewmaker.parameters())
        self.vm_opt.step()
        self.encoder.requires_grad_(True)
        self.aux.requires_grad_(True)
        return vm_loss.detach()

    def simultaneous_step(self, raw, g, labels=None, clean=None) -> dict:
        """game="simultaneous": one set of views with gradient, one encoder forward and one backward update
        both players. The encoder (and supervised heads) descend L; the viewmaker ascends it: its gradients
        are negated before its Adam step, so it gets −∇_φ L at the encoder the views were scored by (the
        pre-update one). The encoder's update is the alternating game's encoder step on the same views."""
        loss, stats = self.loss(*self.views(raw, g, grad=True), labels, clean)
        self.opt.zero_grad(set_to_none=True)
        self.vm_opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in self.viewmaker.parameters():
            if p.grad is not None:
                p.grad.neg_()  # ascent: the viewmaker maximises the loss
        self.world.average_gradients([*self.opt_params, *self.viewmaker.parameters()])
        self.opt.step()
        self.vm_opt.step()
        return {"loss": loss.detach(), **stats, "viewmaker_loss": -loss.detach()}

    def step(self, raw, g, labels=None) -> dict:
        clean = self.data.modality.clean(raw) if "decoder" in self.aux else None
        if self.moco is not None:  # MoCo: the key encoder follows the encoder before the keys are made
            self.moco.update(self.encoder)
        if self.viewmaker is not None and self.cfg.game == "simultaneous":
            out = self.simultaneous_step(raw, g, labels, clean)
        else:
            out = self.encoder_step(*self.views(raw, g, grad=False), labels, clean)
        keys = self.moco_keys if self.moco is not None else None  # the encoder's step's keys
        if self.viewmaker is not None and self.cfg.game != "simultaneous":
            out["viewmaker_loss"] = self.viewmaker_step(raw, g, labels, clean)
        if keys is not None:  # after the whole step, so that no query meets its own key among the negatives
            self.moco.enqueue(self.world.gather(keys))
        return out

    def supervised_labels(self, split) -> torch.Tensor | None:
        """The labels the supervised objective sees (None when self-supervised)."""
        return {None: None, "coarse": split.coarse_labels, "main": split.labels,
                "alt": split.alt_labels}[self.cfg.supervise]

    def clean_features(self, raw, n: int | None = None) -> torch.Tensor:
        """Pooled encoder features (n, D) of the first n raw items (all by default), clean inputs,
        eval mode."""
        clean = self.data.modality.clean
        return probe.extract(self.encoder, lambda sl: self.cl(clean(raw[sl])),
                             len(raw) if n is None else n)

    # ------------------------------------------------------------------ epochs
    def learning_rate(self, epoch: int) -> float:
        """The encoder's lr in epoch ``epoch`` (from 0): constant, or MoCo-v2's lr·½(1 + cos(π e/E))."""
        c = self.cfg
        return c.lr * (0.5 * (1 + math.cos(math.pi * epoch / c.epochs)) if c.lr_schedule == "cosine" else 1.0)

    def train_epoch(self, epoch: int) -> dict:
        c, dev = self.cfg, self.device
        for group in self.opt.param_groups:
            group["lr"] = self.learning_rate(epoch)
        g = epoch_generator(c.seed, epoch, dev)
        split = self.data.train.draw(epoch if c.overlay_resample else 0)
        sup = self.supervised_labels(split)
        n = len(split.labels)
        perm = torch.randperm(n, generator=g, device=dev)
        steps = n // c.batch_size  # drop_last, as the reference
        sums: dict[str, torch.Tensor] = {}
        first_bad = torch.full((), -1, device=dev)  # first step with a non-finite loss, read after the epoch
        t0 = time.perf_counter()
        # the step bar on a terminal or in a notebook; in a log file only the epoch lines
        bar_on = c.progress and self.world.main and (sys.stderr.isatty() or sys.stdout is not sys.__stdout__)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{c.epochs}", disable=not bar_on, leave=False)
        lo, hi = self.world.rows(c.batch_size)  # under torchrun: this process's rows of every global batch
        try:
            streamed = hasattr(split.images, "prefetch")  # a folder decoded as it trains: the next batch now
            for s in bar:
                idx = perm[s * c.batch_size:(s + 1) * c.batch_size][lo:hi]
                if streamed and s + 1 < steps:
                    split.images.prefetch(perm[(s + 1) * c.batch_size:(s + 2) * c.batch_size][lo:hi])
                rows = g if self.world.size == 1 else draws.Rows(g, c.batch_size, lo, hi)
                out = self.step(split.images[idx], rows, None if sup is None else sup[idx])
                for k, v in out.items():
                    sums[k] = sums.get(k, 0) + v
                finite = torch.isfinite(out["loss"]) & torch.isfinite(out.get("viewmaker_loss", out["loss"]))
                first_bad = torch.where((first_bad < 0) & ~finite, s, first_bad)
                if bar_on and (s % PROGRESS_EVERY == 0 or s == steps - 1):
                    rate = (s + 1) * c.batch_size / (time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{out['loss'].item():.3f}", img_s=f"{rate:.0f}")
            sums = self.world.mean(sums)  # the global batch's statistics (a CE head's loss is per process)
        except RuntimeError as exc:  # a collective failed: another process died
            if self.world.size == 1:
                raise
            raise distributed.lost(self.world, f"training epoch {epoch + 1}", exc) from None
        bad = int(first_bad)  # the epoch's one host-device sync
        if bad >= 0:
            ckpt = Path(c.out_dir) / "checkpoint.pt"
            kept = (f"The last good checkpoint (epoch {epoch}) is kept in {ckpt}" if epoch and ckpt.exists()
                    else "No checkpoint was written (the first epoch did not finish)")
            raise NonFiniteLossError(f"the loss became non-finite at epoch {epoch + 1}, step {bad + 1}; "
                                     f"stopped. {kept}. Try a lower lr or budget.")
        dt = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "lr": self.opt.param_groups[0]["lr"], "epoch_s": dt,
               "images_per_s": steps * c.batch_size / dt}
        row.update({k: (v / steps).item() for k, v in sums.items()})
        if self.viewmaker is not None:
            row["viewmaker_lr"] = self.vm_opt.param_groups[0]["lr"]

        def monitor():  # rank 0 alone; the others wait for it
            t1 = time.perf_counter()
            row.update(self.monitor(split, epoch))
            row["monitor_s"] = time.perf_counter() - t1

        self.world.on_main(f"the monitor of epoch {epoch + 1}", monitor)
        return row

    def fit(self, stop_after: int | None = None) -> None:
        """Train to cfg.epochs (or only ``stop_after`` more epochs: how tests simulate a kill), writing the
        checkpoint and history after every epoch."""
        done = 0
        while self.epoch < self.cfg.epochs and (stop_after is None or done < stop_after):
            row = self.train_epoch(self.epoch)
            self.epoch += 1
            row["wall_s_total"] = self.wall_prior + time.perf_counter() - self.wall_start  # all processes
            self.history.append(row)
            self.world.on_main(f"the checkpoint of epoch {self.epoch}", lambda: self.record(row))
            done += 1

    def record(self, row: dict) -> None:
        """After an epoch (rank 0 alone under torchrun): the checkpoint and history, the tracker, the line."""
        checkpoint.save(self)
        if self.tracker is not None:
            self.tracker.epoch(row)
            if self.epoch % tracking.VIEWS_EVERY == 0 or self.epoch == self.cfg.epochs:
                self.tracker.views(tracking.view_grid(self, self.epoch), self.epoch)
        if self.cfg.progress:
            say(epoch_line(row, self.cfg.epochs))
