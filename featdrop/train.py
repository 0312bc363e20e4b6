"""SimCLR pretraining with expert or viewmaker views, then probes on both labels.

Viewmaker training is an alternating min–max (Tamkin et al. 2021), written as a plain loop: per
batch, (1) an encoder step on fresh views with the viewmaker frozen, then (2) a viewmaker step that
*maximises* the same loss on new views (fresh noise) with the encoder's weights frozen. Both passes
run the encoder's BatchNorm in train mode, as the reference did.

``pretrain(cfg)`` resolves the config, writes ``config.json``, and resumes from
``out_dir/checkpoint.pt`` when it exists. The checkpoint (models, optimisers, history, config) is
written atomically after every epoch; all randomness of epoch e comes from generators seeded by
(seed, e), so an interrupted-then-resumed run ends with the same numbers as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import config as cfgmod
from . import losses, pipeline, probe, runs
from .config import Config, ConfigError
from .models import build_encoder
from .viewmaker import Viewmaker

# Fields that may differ when resuming: they do not change what is computed.
RESUME_FREE = {"epochs", "progress", "device", "data_dir", "out_dir", "compile", "download", "preset"}
MONITOR_TRAIN, MONITOR_TEST = 5000, 1000  # kNN monitor sizes (per-epoch, cheap)


class NonFiniteLossError(RuntimeError):
    pass


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 100_003 + epoch + 1)


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
        self.opt = torch.optim.SGD(self.encoder.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        self.vm_opt = torch.optim.Adam(self.viewmaker.parameters(), lr=cfg.viewmaker_lr) if self.viewmaker else None
        if self.cuda:  # bf16 autocast + channels_last on tensor cores; fp32 on CPU
            self.encoder.to(memory_format=torch.channels_last)
            if self.viewmaker:
                self.viewmaker.to(memory_format=torch.channels_last)
        self.enc_fn = torch.compile(self.encoder) if cfg.compile and self.cuda else self.encoder
        self.vm_fn = torch.compile(self.viewmaker) if cfg.compile and self.cuda and self.viewmaker else self.viewmaker
        self.amp = self.cuda  # bf16 autocast on CUDA
        self.history: list[dict] = []
        self.epoch = 0

    # ------------------------------------------------------------------ one step
    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()

    def _cl(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.cuda and x.dim() == 4 else x

    def loss(self, x1, x2):
        c = self.cfg
        with self.autocast():
            z1, z2 = self.enc_fn(self._cl(x1)), self.enc_fn(self._cl(x2))
        return losses.contrastive_loss(c.loss, z1, z2, c.temperature, c.ifm_epsilon, c.ifm_alpha)

    def views(self, raw, g, grad: bool):
        m = self.data.modality
        r1, r2 = m.pair(raw)
        if self.viewmaker is None:
            return m.expert(r1, g), m.expert(r2, g)
        x1, x2 = m.base(r1), (m.base(r2) if r2 is not r1 else None)
        with torch.set_grad_enabled(grad), self.autocast():
            v1 = m.to_encoder(self.vm_fn(x1, g))
            return v1, m.to_encoder(self.vm_fn(x1 if x2 is None else x2, g))

    def encoder_step(self, x1, x2) -> torch.Tensor:
        """One SGD step of the encoder on the loss of two views (encoder inputs)."""
        loss = self.loss(x1, x2)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def viewmaker_step(self, raw, g) -> torch.Tensor:
        """One Adam step of the viewmaker, maximising the loss on fresh views, encoder weights frozen."""
        self.encoder.requires_grad_(False)
        vm_loss = -self.loss(*self.views(raw, g, grad=True))
        self.vm_opt.zero_grad(set_to_none=True)
        vm_loss.backward()
        self.vm_opt.step()
        self.encoder.requires_grad_(True)
        return vm_loss.detach()

    def step(self, raw, g) -> dict:
        out = {"loss": self.encoder_step(*self.views(raw, g, grad=False))}
        if self.viewmaker is not None:
            out["viewmaker_loss"] = self.viewmaker_step(raw, g)
        return out

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, epoch: int) -> dict:
        c, dev = self.cfg, self.device
        g = epoch_generator(c.seed, epoch, dev)
        split = self.data.train.draw(epoch if c.overlay_resample else 0)
        n = len(split.labels)
        perm = torch.randperm(n, generator=g, device=dev)
        steps = n // c.batch_size  # drop_last, as the reference
        sums: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{c.epochs}", disable=not c.progress, leave=False)
        for s in bar:
            raw = split.images[perm[s * c.batch_size:(s + 1) * c.batch_size]]
            out = self.step(raw, g)
            for k, v in out.items():
                sums[k] = sums.get(k, 0) + v
            if not torch.isfinite(out["loss"]):
                raise NonFiniteLossError(
                    f"loss became {out['loss'].item()} at epoch {epoch + 1}, step {s + 1}; stopped. The last good "
                    f"checkpoint (epoch {epoch}) is kept in {self.out}. Try a lower lr or budget.")
            if c.progress and (s % 5 == 0 or s == steps - 1):
                rate = (s + 1) * c.batch_size / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{out['loss'].item():.3f}", img_s=f"{rate:.0f}")
        if self.cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "lr": self.opt.param_groups[0]["lr"], "epoch_s": dt,
               "images_per_s": steps * c.batch_size / dt}
        row.update({k: (v / steps).item() for k, v in sums.items()})
        if self.viewmaker is not None:
            row["viewmaker_lr"] = self.vm_opt.param_groups[0]["lr"]
        row.update(self.knn_monitor(split))
        return row

    def clean_features(self, raw, n: int) -> torch.Tensor:
        """Pooled encoder features (n, D) of the first n raw items, clean inputs, eval mode."""
        clean = self.data.modality.clean
        return probe.extract(self.encoder, lambda sl: self._cl(clean(raw[sl])), n)

    def knn_monitor(self, split) -> dict:
        c, d = self.cfg, self.data
        ntr, nte = min(len(split.labels), MONITOR_TRAIN), min(len(d.test.labels), MONITOR_TEST)
        ftr, fte = self.clean_features(split.images, ntr), self.clean_features(d.test.images, nte)
        return {f"knn_{name}": probe.knn_accuracy(ftr, ytr[:ntr], fte, yte[:nte], k, c.knn_k)
                for name, ytr, yte, k in (("main", split.labels, d.test.labels, d.num_classes),
                                          ("alt", split.alt_labels, d.test.alt_labels, d.num_alt_classes))}

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {"epoch": self.epoch, "config": dataclasses.asdict(self.cfg), "history": self.history,
                "encoder": self.encoder.state_dict(), "opt": self.opt.state_dict(),
                "viewmaker": self.viewmaker.state_dict() if self.viewmaker else None,
                "vm_opt": self.vm_opt.state_dict() if self.vm_opt else None,
                "torch_rng": torch.get_rng_state()}

    def save(self) -> None:
        runs.atomic_save(self.state(), self.out / "checkpoint.pt")
        runs.write_history(self.out / "history.jsonl", self.history)

    def try_resume(self) -> bool:
        path = self.out / "checkpoint.pt"
        if not path.exists():
            return False
        ck = torch.load(path, map_location=self.device, weights_only=False)
        # a field the saved run predates counts as having its default value
        saved = {**dataclasses.asdict(Config()), **ck["config"]}
        now = dataclasses.asdict(self.cfg)
        diff = {k: (saved[k], now[k]) for k in now if k not in RESUME_FREE and saved[k] != now[k]}
        if diff:
            raise ConfigError(f"out_dir {str(self.out)!r} holds a run with a different config "
                              f"(field: saved vs now) {diff}; use another out_dir or the same values")
        self.encoder.load_state_dict(ck["encoder"])
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
                extra = f" vm_loss {row['viewmaker_loss']:.3f}" if "viewmaker_loss" in row else ""
                print(f"epoch {row['epoch']}/{self.cfg.epochs}: loss {row['loss']:.3f}{extra}  "
                      f"{row['images_per_s']:.0f} img/s  kNN main {row['knn_main']:.3f} alt {row['knn_alt']:.3f}",
                      flush=True)

    def evaluate(self) -> dict:
        """Probe accuracies and kNN for both labels, from the final encoder (no checkpoint selection)."""
        c, d = self.cfg, self.data
        split = d.train.draw(0)
        clean = d.modality.clean
        ntr, nte = len(split.labels), len(d.test.labels)
        t0 = time.perf_counter()
        metrics: dict = {}
        if c.probe == "fast":
            ftr, fte = self.clean_features(split.images, ntr), self.clean_features(d.test.images, nte)
        for name, ytr, yte, k in (("main", split.labels, d.test.labels, d.num_classes),
                                  ("alt", split.alt_labels, d.test.alt_labels, d.num_alt_classes)):
            if c.probe == "fast":
                metrics[f"probe_{name}"] = probe.logistic_regression(ftr, ytr, fte, yte, k)
                metrics[f"knn_{name}"] = probe.knn_accuracy(ftr, ytr, fte, yte, k, c.knn_k)
            else:
                g = torch.Generator(device=self.device).manual_seed(c.seed)
                train_in = self._probe_views(split, g)
                metrics[f"probe_{name}"] = probe.reference_probe(
                    self.encoder, train_in, ntr, ytr, lambda sl: self._cl(clean(d.test.images[sl])), nte, yte, k,
                    epochs=c.probe_epochs, generator=g)
            metrics[f"chance_{name}"] = (torch.bincount(yte, minlength=k).max() / len(yte)).item()
        metrics["probe_s"] = time.perf_counter() - t0
        return metrics

    def _probe_views(self, split, g):
        def inputs(idx):
            with torch.no_grad():
                x1, _ = self.views(split.images[idx], g, grad=False)
            return self._cl(x1)
        return inputs


def pretrain(cfg: Config | None = None, stop_after: int | None = None, **overrides) -> dict:
    """Run (or resume) one pretraining + probe run; returns the metrics dict (also in metrics.json)."""
    cfg = cfgmod.make(**{**(dataclasses.asdict(cfg) if cfg else {}), **overrides})
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
    metrics.update({"epochs": trainer.epoch, "final_loss": final["loss"], "device": str(trainer.device),
                    "device_name": torch.cuda.get_device_name(trainer.device) if trainer.cuda else "cpu",
                    "train_s": sum(r["epoch_s"] for r in trainer.history),
                    "wall_s": prior_s + time.perf_counter() - t0, "resumed": resumed,
                    "overlay": trainer.cfg.overlay, "views": trainer.cfg.views, "seed": trainer.cfg.seed,
                    "preset": trainer.cfg.preset, "encoder": trainer.cfg.encoder})
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
