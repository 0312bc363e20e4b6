"""SimCLR pretraining with expert or viewmaker views, then probes on both labels.

Viewmaker training is an alternating min–max (Tamkin et al. 2021), written as a plain loop: per
batch, (1) an encoder step on fresh views with the viewmaker frozen, then (2) a viewmaker step that
*maximises* the same loss on new views (fresh noise) with the encoder's weights frozen. Both passes
run the encoder's BatchNorm in train mode, as the reference did.

``pretrain(cfg)`` resolves the config, writes ``config.json``, and resumes from
``out_dir/checkpoint.pt`` when it exists. The checkpoint (models, optimisers, history, config) is
written atomically after every epoch; all randomness of epoch e comes from generators seeded by
(seed, e), so on a CPU an interrupted-then-resumed run ends with the same numbers as an uninterrupted
one (on CUDA, bf16 and cuDNN are not bit-deterministic). A run holds ``out_dir``'s lock while it trains.

Inside an epoch nothing waits for the device: losses and health statistics accumulate as device
tensors, and the non-finite check is read once, at the end of the epoch, before the checkpoint is
written, so a non-finite loss still never reaches a checkpoint. Supervised objectives (``supervise``
set: SupCon, spread, the class-conditional autoencoder) share the same loop; their labels come with
the batch.
"""
from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from pathlib import Path

import warnings

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import config as cfgmod
from . import health, losses, pipeline, runlock, runs
from . import probe as probe_mod  # ``evaluate`` takes an argument named probe
from .config import Config, ConfigError
from .models import build_encoder
from .viewmaker import Viewmaker

# Fields that may differ when resuming: they do not change what is computed.
RESUME_FREE = {"epochs", "progress", "device", "data_dir", "out_dir", "compile", "download", "preset"}
MONITOR_TRAIN, MONITOR_TEST = 5000, 1000  # kNN monitor / health sizes (per epoch, cheap)
HEALTH_PROBE_N, HEALTH_PROBE_ITERS = 2000, 100  # the health metrics' clean-feature probes: items, L-BFGS iterations
PROGRESS_EVERY = 25                       # steps between progress-bar updates (each reads the loss: a sync)


class NonFiniteLossError(RuntimeError):
    pass


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read; the message names the file and what to do. Nothing is deleted."""


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 100_003 + epoch + 1)


def monitor_indices(n: int, k: int, seed: int, stream: int) -> torch.Tensor:
    """A fixed, seeded random subset of k of n items (data sets on disk are in class order, so the
    first k would all share a class)."""
    if n <= k:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_919 + stream))[:k]


class Trainer:
    def __init__(self, cfg: Config, data: pipeline.Data | None = None):
        """``data``: already-loaded data (the benchmark passes synthetic batches); default: load it."""
        self.cfg = cfg = cfgmod.resolve(cfg)
        self.device = torch.device(cfg.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise ConfigError(f"config field 'device' = {cfg.device!r} is invalid: CUDA is not available here; "
                              f"allowed auto or cpu")
        self.out = Path(cfg.out_dir)
        self.data = data if data is not None else pipeline.load(cfg, self.device)
        m = self.data.modality
        with torch.random.fork_rng(devices=[]):  # weights from the seed, global RNG untouched
            torch.manual_seed(cfg.seed)
            self.encoder = build_encoder(cfg.encoder, m.in_channels, cfg.embedding_dim, cfg.projection_head,
                                         audio=m.audio).to(self.device)
            self.viewmaker = None
            if cfg.views == "viewmaker":
                self.viewmaker = Viewmaker(m.in_channels, cfg.budget, cfg.num_res_blocks, cfg.viewmaker_width,
                                           clamp=m.clamp if cfg.clamp else None).to(self.device)
        # supervised heads, trained with the encoder: a label-smoothed CE head (ae; supcon/spread with
        # ce_weight) and the autoencoder's decoder (ae)
        n_sup = {None: 0, "coarse": 2, "main": self.data.num_classes, "alt": self.data.num_alt_classes}[cfg.supervise]
        aux = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            if cfg.loss == "ae" or cfg.ce_weight:
                aux["ce"] = nn.Linear(self.encoder.feature_dim, n_sup)
            if cfg.loss == "ae":
                from .decoder import Decoder

                aux["decoder"] = Decoder(self.encoder.feature_dim, m.in_channels, size=64 if m.audio else 32)
        self.aux = nn.ModuleDict(aux).to(self.device)
        fused = dict(fused=True) if self.cuda else {}  # one kernel per optimiser step on CUDA
        self.opt = torch.optim.SGD([*self.encoder.parameters(), *self.aux.parameters()], lr=cfg.lr,
                                   momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
        self.vm_opt = (torch.optim.Adam(self.viewmaker.parameters(), lr=cfg.viewmaker_lr, **fused)
                       if self.viewmaker else None)
        if self.cuda:  # bf16 autocast + channels_last on tensor cores; fp32 on CPU
            self.encoder.to(memory_format=torch.channels_last)
            if self.viewmaker:
                self.viewmaker.to(memory_format=torch.channels_last)
        # compile: the viewmaker only. Its noise comes in as tensors, so it traces without graph
        # breaks; compiling the encoder made the expert step slower on an H100 (9,538 → 6,237 img/s).
        self.vm_fn = self.viewmaker
        if cfg.compile and not self.cuda:
            warnings.warn("compile=True is a no-op on the CPU: torch.compile is only used on CUDA", stacklevel=2)
        elif cfg.compile and self.viewmaker is not None:
            self.vm_fn = torch.compile(self.viewmaker)
        elif cfg.compile:
            warnings.warn("compile=True is a no-op for expert views: compiling the encoder made the step slower "
                          "on an H100; only the viewmaker is compiled", stacklevel=2)
        self.amp = self.cuda  # bf16 autocast on CUDA
        self.history: list[dict] = []
        self.epoch = 0
        self._monitor: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ one step
    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()

    def _cl(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.cuda and x.dim() == 4 else x

    def loss(self, x1, x2, labels=None, clean=None) -> tuple[torch.Tensor, dict]:
        """The objective on two views (encoder inputs) and its statistics (detached device tensors).
        ``labels``: the batch's supervised labels; ``clean``: the clean encoder input (ae's target)."""
        c = self.cfg
        stats: dict[str, torch.Tensor] = {}
        with self.autocast():
            (p1, z1), (p2, z2) = self.encoder.embed(self._cl(x1)), self.encoder.embed(self._cl(x2))
        total = torch.zeros((), device=self.device)
        if c.loss != "ae":
            total = losses.contrastive_loss(c.loss, z1, z2, c.temperature, c.ifm_epsilon, c.ifm_alpha,
                                            labels=labels, spread_alpha=c.spread_alpha)
            stats["pos_acc"] = health.positive_accuracy(z1.detach(), z2.detach())
        if "ce" in self.aux:  # mean over both views
            ce = sum(losses.smoothed_cross_entropy(self.aux["ce"](p.float()), labels) for p in (p1, p2)) / 2
            total = total + (1.0 if c.loss == "ae" else c.ce_weight) * ce
            stats["ce_loss"] = ce.detach()
        if "decoder" in self.aux:  # reconstruct the clean input from each view's pooled features
            from .decoder import reconstruction_loss

            rec = sum(reconstruction_loss(self.aux["decoder"](p.float()), clean.float()) for p in (p1, p2)) / 2
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
                return m.to_encoder(self.vm_fn(self._cl(x), noise=noise)).chunk(2)
            # on a CPU two B-batch calls on the same noise are faster (measured) and give the same views
            halves = zip(x.chunk(2), zip(*(n.chunk(2) for n in noise)))
            return tuple(m.to_encoder(self.vm_fn(xh, noise=list(nh))) for xh, nh in halves)

    def encoder_step(self, x1, x2, labels=None, clean=None) -> dict:
        """One SGD step of the encoder (and supervised heads) on two views; returns detached statistics."""
        loss, stats = self.loss(x1, x2, labels, clean)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), **stats}

    def viewmaker_step(self, raw, g, labels=None, clean=None) -> torch.Tensor:
        """One Adam step of the viewmaker, maximising the loss on fresh views, encoder weights frozen."""
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
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{c.epochs}", disable=not c.progress, leave=False)
        for s in bar:
            idx = perm[s * c.batch_size:(s + 1) * c.batch_size]
            out = self.step(split.images[idx], g, None if sup is None else sup[idx])
            for k, v in out.items():
                sums[k] = sums.get(k, 0) + v
            finite = torch.isfinite(out["loss"]) & torch.isfinite(out.get("viewmaker_loss", out["loss"]))
            first_bad = torch.where((first_bad < 0) & ~finite, s, first_bad)
            if c.progress and (s % PROGRESS_EVERY == 0 or s == steps - 1):
                rate = (s + 1) * c.batch_size / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{out['loss'].item():.3f}", img_s=f"{rate:.0f}")
        bad = int(first_bad)  # the epoch's one host-device sync
        if bad >= 0:
            raise NonFiniteLossError(
                f"the loss became non-finite at epoch {epoch + 1}, step {bad + 1}; stopped. The last good "
                f"checkpoint (epoch {epoch}) is kept in {self.out}. Try a lower lr or budget.")
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

    def clean_features(self, raw, n: int | None = None) -> torch.Tensor:
        """Pooled encoder features (n, D) of the first n raw items (all by default), clean inputs, eval mode."""
        clean = self.data.modality.clean
        return probe_mod.extract(self.encoder, lambda sl: self._cl(clean(raw[sl])), len(raw) if n is None else n)

    def one_view(self, raw, g):
        """One view per item of the run's own kind: (encoder input, the viewmaker's δ or None)."""
        m = self.data.modality
        r1 = m.pair(raw)[0]
        if self.viewmaker is None:
            return m.expert(r1, g), None
        x = m.base(r1)
        with torch.no_grad(), self.autocast():
            delta = self.viewmaker.perturbation(self._cl(x), noise=self.viewmaker.draw_noise(x, g)).float()
        view = x + delta
        if self.viewmaker.clamp is not None:
            view = view.clamp(*self.viewmaker.clamp)
        return m.to_encoder(view), delta

    def monitor(self, split, epoch: int) -> dict:
        """kNN accuracy on both labels and the game's health, on fixed random subsets of train and test."""
        c, d = self.cfg, self.data
        if self._monitor is None:
            self._monitor = (monitor_indices(len(split.labels), MONITOR_TRAIN, c.seed, 1).to(self.device),
                             monitor_indices(len(d.test.labels), MONITOR_TEST, c.seed, 2).to(self.device))
        itr, ite = self._monitor
        raw_te = d.test.images[ite]
        ftr, fte = self.clean_features(split.images[itr]), self.clean_features(raw_te)
        labelsets = [(name, ytr[itr], yte[ite], k) for name, ytr, yte, k in (
            ("main", split.labels, d.test.labels, d.num_classes),
            ("alt", split.alt_labels, d.test.alt_labels, d.num_alt_classes))]
        out = {f"knn_{name}": probe_mod.knn_accuracy(ftr, ytr, fte, yte, k, c.knn_k) for name, ytr, yte, k in labelsets}
        t0 = time.perf_counter()  # the health metrics' own cost, beside the kNN monitor's (issue 11: < 10 % of an epoch)
        # feature dropout: one draw of the run's own views of the monitor's test images
        g = torch.Generator(device=self.device).manual_seed(c.seed * 100_003 + 50_000 + epoch)
        x, delta = self.one_view(raw_te, g)
        fview = probe_mod.extract(self.encoder, lambda sl: self._cl(x[sl]), len(x))
        for name, ytr, yte, k in labelsets:
            if k > 1:
                n = HEALTH_PROBE_N  # the monitor's items are a random subset, so its head is one too
                clean_probe = probe_mod.LinearProbe(ftr[:n], ytr[:n], k, iters=HEALTH_PROBE_ITERS)
                out[f"{name}_dropped"] = health.dropped_fraction(clean_probe.logits(fte).argmax(1),
                                                                 clean_probe.logits(fview).argmax(1), yte)
        masks = getattr(d.test, "masks", None)
        if delta is not None and masks is not None and c.overlay != "none":
            out["overlay_budget_share"], out["overlay_area_share"] = health.overlay_budget_share(delta, masks[ite])
        out["health_s"] = time.perf_counter() - t0
        return out

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {"epoch": self.epoch, "config": dataclasses.asdict(self.cfg), "history": self.history,
                "encoder": self.encoder.state_dict(), "opt": self.opt.state_dict(),
                "viewmaker": self.viewmaker.state_dict() if self.viewmaker else None, "aux": self.aux.state_dict(),
                "vm_opt": self.vm_opt.state_dict() if self.vm_opt else None,
                "torch_rng": torch.get_rng_state()}

    def save(self) -> None:
        runs.atomic_save(self.state(), self.out / "checkpoint.pt")
        runs.write_history(self.out / "history.jsonl", self.history)

    def try_resume(self) -> bool:
        path = self.out / "checkpoint.pt"
        if not path.exists():
            return False
        try:
            ck = torch.load(path, map_location=self.device, weights_only=False)
            saved_config = ck["config"]
        except Exception as exc:  # truncated file, pickle error, not a checkpoint
            raise CheckpointError(
                f"{path} is damaged or unreadable ({type(exc).__name__}: {exc}), so this run cannot resume from it. "
                f"To start over, move it aside first (mv {path} {path}.damaged) or use another out_dir; "
                f"nothing was deleted.") from None
        # a field the saved run predates counts as having its default value
        saved = {**dataclasses.asdict(Config()), **saved_config}
        now = dataclasses.asdict(self.cfg)
        diff = {k: (saved[k], now[k]) for k in now if k not in RESUME_FREE and saved[k] != now[k]}
        if diff:
            raise ConfigError(f"out_dir {str(self.out)!r} holds a run with a different config "
                              f"(field: saved vs now) {diff}; use another out_dir or the same values")
        self.encoder.load_state_dict(ck["encoder"])
        self.aux.load_state_dict(ck.get("aux") or {})
        self.opt.load_state_dict(ck["opt"])
        if self.viewmaker is not None:
            self.viewmaker.load_state_dict(ck["viewmaker"])
            self.vm_opt.load_state_dict(ck["vm_opt"])
        self.epoch, self.history = ck["epoch"], ck["history"]
        return True

    # ------------------------------------------------------------------ the run
    def fit(self, stop_after: int | None = None) -> None:
        """Train to cfg.epochs (or only ``stop_after`` more epochs: how tests simulate a kill)."""
        done = 0
        while self.epoch < self.cfg.epochs and (stop_after is None or done < stop_after):
            row = self.train_epoch(self.epoch)
            self.epoch += 1
            self.history.append(row)
            self.save()
            done += 1
            if self.cfg.progress:
                extra = "".join(f" {label} {row[key]:.3f}" for key, label in (
                    ("viewmaker_loss", "vm_loss"), ("pos_acc", "pos_acc"), ("alt_dropped", "alt_dropped"),
                    ("overlay_budget_share", "overlay_share")) if key in row)
                print(f"epoch {row['epoch']}/{self.cfg.epochs}: loss {row['loss']:.3f}{extra}  "
                      f"{row['images_per_s']:.0f} img/s  kNN main {row['knn_main']:.3f} alt {row['knn_alt']:.3f}",
                      flush=True)

    def probe_features(self):
        """The fast protocol's inputs: clean pooled features of the whole training and test split, and
        the labelsets (name, train labels, test labels, classes): main, alt and (CIFAR-10) coarse."""
        d = self.data
        split = d.train.draw(0)
        labelsets = [("main", split.labels, d.test.labels, d.num_classes),
                     ("alt", split.alt_labels, d.test.alt_labels, d.num_alt_classes)]
        if getattr(split, "coarse_labels", None) is not None:
            labelsets.append(("coarse", split.coarse_labels, d.test.coarse_labels, 2))
        return self.clean_features(split.images), self.clean_features(d.test.images), labelsets

    def evaluate(self, probe: str | None = None, probe_epochs: int | None = None) -> dict:
        """Probe accuracies (and, fast protocol, kNN) for every label, from the final encoder (no
        checkpoint selection). ``probe``/``probe_epochs`` default to the run's own. The coarse label is
        always probed by the fast protocol (a cheap 2-class probe)."""
        c, d = self.cfg, self.data
        protocol, epochs = probe or c.probe, probe_epochs or c.probe_epochs
        if protocol not in cfgmod.PROBES:
            raise ConfigError(f"probe {protocol!r} is invalid: allowed one of {', '.join(cfgmod.PROBES)}")
        t0 = time.perf_counter()
        ftr, fte, labelsets = self.probe_features()
        if protocol == "fast":
            metrics = probe_mod.fast_metrics(ftr, fte, labelsets, c.knn_k)
        else:
            split, clean = d.train.draw(0), d.modality.clean
            metrics = probe_mod.fast_metrics(ftr, fte, labelsets[2:], c.knn_k)  # coarse
            for name, ytr, yte, k in labelsets[:2]:
                g = torch.Generator(device=self.device).manual_seed(c.seed)
                metrics[f"probe_{name}"] = probe_mod.reference_probe(
                    self.encoder, self._probe_views(split, g), len(ytr), ytr,
                    lambda sl: self._cl(clean(d.test.images[sl])), len(yte), yte, k, epochs=epochs, generator=g)
                metrics[f"chance_{name}"] = probe_mod.chance(yte, k)
        metrics["probe_s"] = time.perf_counter() - t0
        return metrics

    def _probe_views(self, split, g):
        def inputs(idx):
            with torch.no_grad():
                x1, _ = self.views(split.images[idx], g, grad=False)
            return self._cl(x1)
        return inputs


def pretrain(cfg: Config | None = None, stop_after: int | None = None, **overrides) -> dict:
    """Run (or resume) one pretraining + probe run; returns the metrics dict (also in metrics.json).

    The run holds ``out_dir``'s lock from before its data is loaded until it returns, so a second
    run on the same directory fails at once (``runlock.RunLockedError``)."""
    cfg = cfgmod.resolve(cfgmod.make(**{**(dataclasses.asdict(cfg) if cfg else {}), **overrides}))
    with runlock.acquire(cfg.out_dir):
        return _pretrain_locked(cfg, stop_after)


def _pretrain_locked(cfg: Config, stop_after: int | None) -> dict:
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    out = trainer.out
    resumed = trainer.try_resume()
    if not resumed:
        runs.write_json(out / "config.json", dataclasses.asdict(trainer.cfg))
    elif (out / "metrics.json").exists() and trainer.epoch >= trainer.cfg.epochs:
        return runs.read_json(out / "metrics.json")
    prior_s = trainer.history[-1].get("wall_s_total", 0.0) if trainer.history else 0.0
    trainer.fit(stop_after)
    if trainer.epoch < trainer.cfg.epochs:
        return {"stopped_at_epoch": trainer.epoch}
    metrics = trainer.evaluate()
    final = trainer.history[-1]
    c = trainer.cfg
    metrics.update({"epochs": trainer.epoch, "final_loss": final["loss"], "device": str(trainer.device),
                    "device_name": torch.cuda.get_device_name(trainer.device) if trainer.cuda else "cpu",
                    "train_s": sum(r["epoch_s"] for r in trainer.history),
                    "wall_s": prior_s + time.perf_counter() - t0, "resumed": resumed,
                    "overlay": c.overlay, "views": c.views, "seed": c.seed, "preset": c.preset,
                    "encoder": c.encoder, "loss": c.loss, "supervise": c.supervise})
    if not runs.all_finite(metrics):
        raise NonFiniteLossError(f"non-finite metrics {metrics}")
    runs.write_json(out / "metrics.json", metrics)
    return metrics


def load_run(out_dir: str | Path, device: str = "cpu") -> Trainer:
    """Rebuild a trained run (encoder, viewmaker, data) from its directory, for inspection."""
    saved = runs.read_json(Path(out_dir) / "config.json")
    data_dir = str(cfgmod.project_path(saved["data_dir"]))  # a relative data_dir, from another working directory
    cfg = cfgmod.make(**{**saved, "device": device, "out_dir": str(out_dir), "progress": False, "data_dir": data_dir})
    trainer = Trainer(cfg)
    if not trainer.try_resume():
        raise FileNotFoundError(f"no checkpoint.pt in {out_dir}")
    return trainer
