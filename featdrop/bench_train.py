"""Training throughput, images/s on the current device, with the reference design as baseline.

Measured: expert view generation (two views), viewmaker view generation (two views), a full expert
SimCLR step and a full viewmaker step (encoder step + viewmaker step). Baseline, in the same
process: the reference design, per-sample torchvision transforms on PIL images through a
DataLoader, fp32, for the views and for the full expert step.
"""
from __future__ import annotations

import argparse
import time

import torch

from . import config, losses, pipeline, views
from .models import build_encoder
from .viewmaker import Viewmaker


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
    cfg = config.resolve(config.make(preset=args.preset, device=args.device, data_dir=data_dir,
                                     batch_size=args.batch, compile=args.compile))
    dev = torch.device(cfg.device)
    cuda = dev.type == "cuda"
    images = torch.randint(0, 256, (args.batch * (args.steps + 1), 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    raw = images[:args.batch].to(dev)
    m = pipeline.image_modality()
    torch.manual_seed(0)
    enc = build_encoder(cfg.encoder).to(dev)
    vm = Viewmaker(3, cfg.budget, cfg.num_res_blocks, cfg.viewmaker_width).to(dev)
    if cuda:
        enc.to(memory_format=torch.channels_last)
        vm.to(memory_format=torch.channels_last)
    enc_fn = torch.compile(enc) if args.compile and cuda else enc
    vm_fn = torch.compile(vm) if args.compile and cuda else vm
    opt = torch.optim.SGD(enc.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    vm_opt = torch.optim.Adam(vm.parameters(), lr=1e-3)
    g = torch.Generator(device=dev).manual_seed(0)
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else (lambda: torch.autocast("cpu", enabled=False))
    cl = (lambda x: x.contiguous(memory_format=torch.channels_last)) if cuda else (lambda x: x)

    def expert_views():
        return m.expert(raw, g), m.expert(raw, g)

    def vm_views(grad=False):
        x = m.base(raw)
        with torch.set_grad_enabled(grad), amp():
            return m.to_encoder(vm_fn(x, g)), m.to_encoder(vm_fn(x, g))

    def enc_step(v1, v2):
        with amp():
            loss = losses.nt_xent(enc_fn(cl(v1)), enc_fn(cl(v2)), cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def vm_step():
        enc_step(*vm_views())
        enc.requires_grad_(False)
        v1, v2 = vm_views(grad=True)
        with amp():
            loss = -losses.nt_xent(enc_fn(cl(v1)), enc_fn(cl(v2)), cfg.temperature)
        vm_opt.zero_grad(set_to_none=True)
        loss.backward()
        vm_opt.step()
        enc.requires_grad_(True)

    def pil_rates() -> tuple[float, float]:
        """The baseline, timed last: its worker processes would otherwise prefetch in the background
        while our own paths are timed. One epoch = warm-up batch + ``steps`` timed batches."""
        out = []
        for with_step in (False, True):
            loader = torch.utils.data.DataLoader(_PILPairs(images), batch_size=args.batch, shuffle=True,
                                                 num_workers=args.workers, drop_last=True)
            it = iter(loader)
            first = next(it)  # starts the workers
            if with_step:
                enc_step(first[0].to(dev), first[1].to(dev))
            t = time.perf_counter()
            for v1, v2 in it:
                if with_step:  # fp32, no channels_last: the reference's settings
                    enc_step(v1.to(dev), v2.to(dev))
            if cuda:
                torch.cuda.synchronize()
            out.append(args.batch * args.steps / (time.perf_counter() - t))
            del it, loader
        return out[0], out[1]

    name = torch.cuda.get_device_name(dev) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}; preset {cfg.preset}: encoder {cfg.encoder}, viewmaker width {cfg.viewmaker_width}, "
          f"batch {args.batch}, {'bf16 + channels_last' if cuda else 'fp32'}{', compiled' if args.compile else ''}")
    r = {}
    r["expert_views"] = _rate(expert_views, args.batch, args.steps, cuda)
    with torch.no_grad():
        r["viewmaker_views"] = _rate(vm_views, args.batch, args.steps, cuda)
    r["expert_step"] = _rate(lambda: enc_step(*expert_views()), args.batch, args.steps, cuda)
    r["viewmaker_step"] = _rate(vm_step, args.batch, args.steps, cuda)
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
