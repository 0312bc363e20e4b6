"""Training throughput, images/s on the current device, with the reference design as baseline.

Measured: expert view generation (two views), viewmaker view generation (two views), a full expert
SimCLR step and a full viewmaker step (encoder step + viewmaker step). Baseline, in the same
process: the reference design, per-sample torchvision transforms on PIL images through a
DataLoader, fp32, for the views and for the full expert step. The timed steps are the training
code's own (``Trainer.encoder_step`` / ``Trainer.step``), on synthetic uint8 batches.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from . import config, pipeline, train, views


def _rate(fn, batch: int, steps: int, cuda: bool) -> float:
    fn()  # warm-up (and compile)
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    if cuda:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


class _PILPairs(torch.utils.data.Dataset):
    """The reference's data path: a PIL image → two independent torchvision transform draws."""

    def __init__(self, images):
        import torchvision.transforms as T
        from PIL import Image, ImageFilter

        self.images = images.permute(0, 2, 3, 1).numpy()
        self.Image = Image

        class Blur:  # PIL GaussianBlur with σ ~ U[0.1, 2], as the reference
            def __call__(self, im):
                return im.filter(ImageFilter.GaussianBlur(radius=float(torch.empty(1).uniform_(0.1, 2.0))))

        self.t = T.Compose([T.RandomResizedCrop(32, scale=(0.2, 1.0)),
                            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
                            T.RandomApply([Blur()], p=0.5), T.RandomHorizontalFlip(), T.ToTensor(),
                            T.Normalize(views.CIFAR_MEAN, views.CIFAR_STD)])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        im = self.Image.fromarray(self.images[i])
        return self.t(im), self.t(im)


def main(argv=None, data_dir: str | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="auto", choices=config.PRESET_NAMES)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement (after one warm-up)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the PIL baseline")
    ap.add_argument("--compile", action="store_true", help="torch.compile encoder and viewmaker (CUDA)")
    args = ap.parse_args(argv)
    images = torch.randint(0, 256, (args.batch * (args.steps + 1), 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    # The training code itself, on synthetic batches: a viewmaker run's Trainer.
    m = pipeline.image_modality()
    trainer = train.Trainer(config.make(preset=args.preset, device=args.device, data_dir=data_dir, views="viewmaker",
                                        batch_size=args.batch, compile=args.compile, out_dir=tempfile.mkdtemp()),
                            data=pipeline.Data(m, None, None, 10, 1))
    cfg, dev, cuda = trainer.cfg, trainer.device, trainer.cuda
    raw = images[:args.batch].to(dev)
    g = torch.Generator(device=dev).manual_seed(0)

    def expert_views():
        return m.expert(raw, g), m.expert(raw, g)

    def pil_rates() -> tuple[float, float]:
        """The baseline, timed last: its worker processes would otherwise prefetch in the background
        while our own paths are timed. One epoch = warm-up batch + ``steps`` timed batches."""
        out = []
        for with_step in (False, True):
            loader = torch.utils.data.DataLoader(_PILPairs(images), batch_size=args.batch, shuffle=True,
                                                 num_workers=args.workers, drop_last=True)
            it = iter(loader)
            first = next(it)  # starts the workers
            trainer.amp = False  # the reference trained in fp32
            if with_step:
                trainer.encoder_step(first[0].to(dev), first[1].to(dev))
            t = time.perf_counter()
            for v1, v2 in it:
                if with_step:
                    trainer.encoder_step(v1.to(dev), v2.to(dev))
            if cuda:
                torch.cuda.synchronize()
            out.append(args.batch * args.steps / (time.perf_counter() - t))
            del it, loader
        trainer.amp = cuda
        return out[0], out[1]

    name = torch.cuda.get_device_name(dev) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}; preset {cfg.preset}: encoder {cfg.encoder}, viewmaker width {cfg.viewmaker_width}, "
          f"batch {args.batch}, {'bf16 + channels_last' if cuda else 'fp32'}{', compiled' if args.compile else ''}")
    r = {}
    r["expert_views"] = _rate(expert_views, args.batch, args.steps, cuda)
    r["viewmaker_views"] = _rate(lambda: trainer.views(raw, g, grad=False), args.batch, args.steps, cuda)
    r["expert_step"] = _rate(lambda: trainer.encoder_step(*expert_views()), args.batch, args.steps, cuda)
    r["viewmaker_step"] = _rate(lambda: trainer.step(raw, g), args.batch, args.steps, cuda)
    r["pil_views"], r["pil_expert_step"] = pil_rates()
    rows = [("expert view generation (2 views)", "expert_views", "pil_views"),
            ("viewmaker view generation (2 views)", "viewmaker_views", None),
            ("full expert SimCLR step", "expert_step", "pil_expert_step"),
            ("full viewmaker step", "viewmaker_step", None),
            ("reference: PIL views via DataLoader", "pil_views", None),
            ("reference: PIL views + expert step", "pil_expert_step", None)]
    for label, key, base in rows:
        ratio = f"   {r[key] / r[base]:5.1f}x the reference design" if base else ""
        print(f"  {label:38s} {r[key]:9,.0f} images/s{ratio}")
    n_train = cfg.subset or 50_000
    epoch_s = n_train / r["viewmaker_step"]
    print(f"  viewmaker run, {cfg.epochs} epochs x {n_train} images: {epoch_s * cfg.epochs / 60:.1f} min "
          f"({epoch_s:.1f} s/epoch, steps only)")
    return r


if __name__ == "__main__":
    main()
