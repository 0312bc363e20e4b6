"""SimCLR pretraining with expert or viewmaker views: the min–max step and the epoch loop.

Viewmaker training is an alternating min–max (Tamkin et al. 2021), written as a plain loop: per batch,
(1) an encoder step on fresh views with the viewmaker frozen, then (2) a viewmaker step that *maximises*
the same loss on new views (fresh noise) with the encoder's weights frozen. Both passes run the encoder's
BatchNorm in train mode, as the reference did. Supervised objectives (``supervise`` set: SupCon, spread,
the class-conditional autoencoder) share the loop; their labels come with the batch.

All randomness of epoch e comes from a generator seeded by (seed, e), so on a CPU an interrupted-then-resumed
run ends with the same numbers as an uninterrupted one (``featdrop.train.checkpoint``). Inside an epoch
nothing waits for the device: losses and health statistics accumulate as device tensors, and the
non-finite check is read once, at the end of the epoch, before any checkpoint is written.
"""
from __future__ import annotations

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
from ..models import Decoder, build_encoder
from ..views import modality
from ..views.viewmaker import Viewmaker
from . import checkpoint, tracking
from .monitor import MONITOR_TRAIN, Monitor, positive_accuracy

PROGRESS_EVERY = 25  # steps between progress-bar updates (each reads the loss: a sync)


def epoch_line(row: dict, epochs: int) -> str:
    """One line per epoch: the loss, speed, kNN on both labels and the game's health ('–' for a label the
    run does not have)."""
    def f(key, label):
        v = row.get(key, "absent")
        return "" if v == "absent" else f"  {label} {'–' if v is None else f'{v:.3f}'}"

    return (f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.3f}{f('viewmaker_loss', 'vm_loss')}  "
            f"{row['images_per_s']:.0f} img/s{f('knn_main', 'kNN main')}{f('knn_alt', 'alt')}"
            f"{f('pos_acc', 'pos_acc')}{f('alt_destroyed', 'alt_destroyed')}"
            f"{f('main_destroyed', 'main_destroyed')}{f('overlay_budget_share', 'overlay_share')}")


def say(line: str) -> None:
    """A progress line on stdout and, inside a notebook kernel (papermill, JupyterLab), also on the kernel's
    own stderr: the terminal that started papermill shows it without --log-output."""
    print(line, flush=True)
    if sys.stdout is not sys.__stdout__ and sys.__stderr__ is not None:
        print(line, file=sys.__stderr__, flush=True)


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 100_003 + epoch + 1)


class Trainer:
    def __init__(self, cfg: Config, data: Data | None = None):
        """``data``: already-loaded data (the benchmark passes synthetic batches); default: load it."""
        self.cfg = cfg = cfgmod.resolve(cfg)
        self.device = devmod.resolve(cfg.device, field="config field 'device'")
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
                                         audio=m.audio).to(self.device)
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
                aux["decoder"] = Decoder(self.encoder.feature_dim, m.in_channels, size=64 if m.audio else 32)
        self.aux = nn.ModuleDict(aux).to(self.device)
        fused = dict(fused=True) if self.cuda else {}  # one kernel per optimiser step on CUDA
        self.opt = torch.optim.SGD([*self.encoder.parameters(), *self.aux.parameters()], lr=cfg.lr,
                                   momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
        self.vm_opt = (torch.optim.Adam(self.viewmaker.parameters(), lr=cfg.viewmaker_lr, **fused)
                       if self.viewmaker else None)
        if cfg.channels_last:  # faster convolutions: cuDNN on tensor cores, oneDNN on a CPU (measured: docs)
            self.encoder.to(memory_format=torch.channels_last)
            if self.viewmaker:
                self.viewmaker.to(memory_format=torch.channels_last)
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
        with self.autocast():
            (p1, z1), (p2, z2) = (self.encoder.embed(self.cl(x))
                                  for x in (x1, x2))  # pooled, (B, D)
        total = torch.zeros((), device=self.device)
        if losses.OBJECTIVES[c.loss].term is not None:
            total = losses.contrastive_loss(c.loss, z1, z2, c, labels)
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

    def views(self, raw, g, grad: bool):
        """Two views (encoder inputs) of a raw batch. The viewmaker makes both in one call on the
        stacked 2B batch, its noise drawn here, outside the (optionally compiled) network."""
        m = self.data.modality
        r1, r2 = m.pair(raw)
        if self.viewmaker is None:
            return m.expert(r1, g), m.expert(r2, g)
        x = torch.cat([m.base(r1), m.base(r2)])                      # (2B, C, S, S)
        noise = self.viewmaker.draw_noise(x, g)
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
        self.opt.step()
        return {"loss": loss.detach(), **stats}

    def viewmaker_step(self, raw, g, labels=None, clean=None) -> torch.Tensor:
        """One Adam step of the viewmaker on fresh views, encoder weights frozen: max over φ of L."""
        self.encoder.requires_grad_(False)
        self.aux.requires_grad_(False)
        vm_loss = -self.loss(*self.views(raw, g, grad=True), labels, clean)[0]
        self.vm_opt.zero_grad(set_to_none=True)
        vm_loss.backward()
        self.vm_opt.step()
        self.encoder.requires_grad_(True)
        self.aux.requires_grad_(True)
        return vm_loss.detach()

    def step(self, raw, g, labels=None) -> dict:
        clean = self.data.modality.clean(raw) if "decoder" in self.aux else None
        out = self.encoder_step(*self.views(raw, g, grad=False), labels, clean)
        if self.viewmaker is not None:
            out["viewmaker_loss"] = self.viewmaker_step(raw, g, labels, clean)
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
    def train_epoch(self, epoch: int) -> dict:
        c, dev = self.cfg, self.device
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
        bar_on = c.progress and (sys.stderr.isatty() or sys.stdout is not sys.__stdout__)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{c.epochs}", disable=not bar_on, leave=False)
        for s in bar:
            idx = perm[s * c.batch_size:(s + 1) * c.batch_size]
            out = self.step(split.images[idx], g, None if sup is None else sup[idx])
            for k, v in out.items():
                sums[k] = sums.get(k, 0) + v
            finite = torch.isfinite(out["loss"]) & torch.isfinite(out.get("viewmaker_loss", out["loss"]))
            first_bad = torch.where((first_bad < 0) & ~finite, s, first_bad)
            if bar_on and (s % PROGRESS_EVERY == 0 or s == steps - 1):
                rate = (s + 1) * c.batch_size / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{out['loss'].item():.3f}", img_s=f"{rate:.0f}")
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
        t1 = time.perf_counter()
        row.update(self.monitor(split, epoch))
        row["monitor_s"] = time.perf_counter() - t1
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
            checkpoint.save(self)
            done += 1
            if self.tracker is not None:
                self.tracker.epoch(row)
                if self.epoch % tracking.VIEWS_EVERY == 0 or self.epoch == self.cfg.epochs:
                    self.tracker.views(tracking.view_grid(self, self.epoch), self.epoch)
            if self.cfg.progress:
                say(epoch_line(row, self.cfg.epochs))
