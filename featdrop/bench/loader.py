"""Does decoding a folder of images keep up with the training step? ``featdrop bench loader`` measures, on
this machine and in one process:
- decoding once (``featdrop.data.folder.decode_all``: DataLoader workers, what ``decode="once"`` does the
  first time), images/s;
- streaming (``folder.Streamed``: a thread pool, the next batch decoded while the current one trains),
  images/s of batches taken in a random order;
- the training step at the same image size on this device (``Trainer.step`` on synthetic uint8 batches, expert
  views), images/s; and so how many decoding cores the step needs, here and for a GPU step rate you give.

Without ``--data-path`` it writes a folder of synthetic JPEGs at ImageNet's typical 500 × 375 px (each a
smooth random picture with noise, about 60 kB, so that decoding costs what a photo's does).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..data import folder
from ..lab.concurrency import cores, synthetic_trainer


def synthetic_jpegs(root: Path, n: int, size=(500, 375), classes: int = 10, seed: int = 0) -> Path:
    """``n`` JPEGs of ``size`` px in ``classes`` class folders: smooth random colour fields with noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        coarse = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
        im = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        noisy = np.asarray(im, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3))
        out = root / f"c{i % classes}" / f"{i:05d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(out, quality=90)
    return root


def decode_once_rate(lst, side: int, workers: int) -> float:
    t = time.perf_counter()
    images, _, _ = folder.decode_all(lst, side, workers)
    return len(images) / (time.perf_counter() - t)


def stream_rate(lst, side: int, workers: int, batch: int, batches: int) -> float:
    """Random batches through ``folder.Streamed``, each prefetched while the previous one is taken."""
    stream = folder.Streamed(lst, side, workers)
    order = torch.randperm(len(lst.files), generator=torch.Generator().manual_seed(0))
    picks = [order[(i * batch) % len(order):][:batch] for i in range(batches)]
    stream[picks[0]]  # the pool's start
    t = time.perf_counter()
    stream.prefetch(picks[1 % batches])
    for i in range(1, batches):
        stream[picks[i]]
        if i + 1 < batches:
            stream.prefetch(picks[i + 1])
    return (batches - 1) * batch / (time.perf_counter() - t)


def step_rate(side: int, encoder: str, batch: int, steps: int, device: str) -> float:
    trainer = synthetic_trainer(views="expert", encoder=encoder, image_size=side, batch_size=batch,
                                device=device, preset="quick")
    raw = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(0)).to(trainer.device)
    g = torch.Generator(device=trainer.device).manual_seed(0)
    trainer.step(raw, g)  # warm-up
    sync = torch.cuda.synchronize if trainer.cuda else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        trainer.step(raw, g)
    sync()
    return steps * batch / (time.perf_counter() - t)


EXAMPLES = """examples:
  featdrop bench loader                                     # synthetic 500 x 375 JPEGs at 224 px, ResNet-50
  featdrop bench loader --data-path /data/imagenet100/train --image-size 224 --workers 16"""


def main(argv=None, prog: str = "featdrop bench loader") -> dict:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-path", help="a folder of class sub-folders (default: synthetic JPEGs, written)")
    ap.add_argument("--images", type=int, default=512, help="synthetic JPEGs to write (default 512)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=cores(), help="decoding workers (default: every core)")
    ap.add_argument("--batch", type=int, default=32, help="images per batch (streaming and the step)")
    ap.add_argument("--encoder", default="resnet50", choices=("resnet50", "resnet18", "convnet"))
    ap.add_argument("--steps", type=int, default=3, help="timed training steps")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--gpu-step-rate", type=float, default=1500.0, help="images/s of a GPU's step to size "
                    "the workers for (default 1500: about a ResNet-50 MoCo step at 224 px on one modern GPU, "
                    "an estimate: measure yours with this command on the GPU machine)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_path) if args.data_path else synthetic_jpegs(Path(tmp), args.images)
        lst = folder.listing(root, "train")
        mb = sum((lst.root / f).stat().st_size for f in lst.files) / 1e6
        print(f"{len(lst.files)} images in {root} ({mb / len(lst.files) * 1000:.0f} kB each), "
              f"{args.image_size} px, {args.workers} workers, {cores()} cores", flush=True)
        r = {"decode_once": decode_once_rate(lst, args.image_size, args.workers),
             "stream": stream_rate(lst, args.image_size, args.workers, args.batch,
                                   max(4, min(16, len(lst.files) // args.batch)))}
    r["step"] = step_rate(args.image_size, args.encoder, args.batch, args.steps, args.device)
    per_core = r["stream"] / max(1, min(args.workers, cores()))
    print(f"  decode once (DataLoader, {args.workers} workers): {r['decode_once']:8.0f} images/s")
    print(f"  stream (thread pool, prefetched):          {r['stream']:8.0f} images/s "
          f"({per_core:.0f} per core)")
    print(f"  training step ({args.encoder}, expert views, batch {args.batch}): {r['step']:8.1f} images/s; "
          f"the stream is {r['stream'] / r['step']:.1f}x the step")
    r["cores_for_gpu"] = args.gpu_step_rate / per_core
    print(f"  a GPU step of {args.gpu_step_rate:.0f} images/s needs about {r['cores_for_gpu']:.0f} decoding "
          f"cores at this rate per core")
    return r
