"""Encoders. ``forward(x)`` gives the embedding fed to the loss; ``features(x)`` gives
``(pooled, prepool)`` for probing.

- ``ResNet18``: the CIFAR ResNet-18 of SimCLR / the viewmaker code (3×3 stride-1 stem, no max-pool,
  stages 64/128/256/512, 4×4 average pool, linear 512 → 128; optional MLP projection head).
  With ``imagenet_stem=True`` it is torchvision's ImageNet ResNet-18 layout (7×7 stride-2 stem with
  max-pool): the reference's audio encoder for 1-channel 64×64 log-mels, and images above 64 px.
- ``ResNet50``: torchvision's ResNet-50 (bottleneck blocks, 2048-d pooled features), the IFM / MoCo-v2
  encoder, with the ImageNet stem above 64 px and the CIFAR stem at or below.
- ``ConvNet``: four conv–BN–ReLU stages for quick CPU runs.
- ``TimeConvNet``: for log-mels, convolutions along time with the mel bands as channels (TC-ResNet's idea:
  Choi et al., "Temporal Convolution for Real-time Keyword Spotting", Interspeech 2019); no 2-d pooling
  blurs the time axis early, and a step costs a tenth of the ConvNet's.
- ``Decoder``: the reconstruction branch of the class-conditional autoencoder of "Perfectly Balanced"
  (Chen, Fu et al., ICML 2022, Thanos), below.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Encoder(nn.Module):
    """Shared head: body → (prepool map) → global average pool → [MLP] → linear embedding."""

    def __init__(self, width: int, embedding_dim: int, projection_head: bool):
        super().__init__()
        head = [nn.Linear(width, width), nn.ReLU(inplace=True)] if projection_head else []
        self.head = nn.Sequential(*head, nn.Linear(width, embedding_dim))
        self.feature_dim = width

    def body(self, x):
        raise NotImplementedError

    def features(self, x):
        prepool = self.body(x)                          # (B, C, h, w)
        return prepool.mean(dim=(2, 3)), prepool.flatten(1)

    def embed(self, x):
        """(pooled features (B, width), embedding (B, embedding_dim)) in one pass."""
        pooled = self.body(x).mean(dim=(2, 3))
        return pooled, self.head(pooled)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))  # (B, embedding_dim)


class ResNet18(Encoder):
    def __init__(self, in_channels: int = 3, embedding_dim: int = 128, projection_head: bool = False,
                 imagenet_stem: bool = False):
        super().__init__(512, embedding_dim, projection_head)
        if imagenet_stem:  # torchvision layout: 7×7/2 stem + max-pool; 64×64 input → 2×2×512 pre-pool
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        else:      # CIFAR layout: 3×3/1 stem, no max-pool; 32×32 input → 4×4×512 pre-pool
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(inplace=True))
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)

    def body(self, x):
        return self.layers(self.stem(x))


class ResNet50(Encoder):
    """torchvision's ResNet-50 (weights from scratch) as an encoder: body → 2048-d pooled features → head."""

    def __init__(self, in_channels: int = 3, embedding_dim: int = 128, projection_head: bool = False,
                 imagenet_stem: bool = True):
        import torchvision

        net = torchvision.models.resnet50(weights=None)
        super().__init__(net.fc.in_features, embedding_dim, projection_head)
        if imagenet_stem:
            conv = net.conv1 if in_channels == 3 else nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.stem = nn.Sequential(conv, net.bn1, net.relu, net.maxpool)
        else:      # small images: 3×3 stride-1 stem, no max-pool (as the CIFAR ResNet-18)
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), net.bn1, net.relu)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)

    def body(self, x):
        return self.layers(self.stem(x))


class ConvNet(Encoder):
    """conv3×3–BN–ReLU ×4 with 2× max-pools: 32×32 → 256×2×2 pre-pool (1024-d)."""

    def __init__(self, in_channels: int = 3, embedding_dim: int = 128, projection_head: bool = False,
                 widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__(widths[-1], embedding_dim, projection_head)
        blocks, cin = [], in_channels
        for i, cout in enumerate(widths):
            blocks += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            blocks.append(nn.MaxPool2d(2) if i < len(widths) - 1 else nn.AdaptiveAvgPool2d(2))
            cin = cout
        self.net = nn.Sequential(*blocks)

    def body(self, x):
        return self.net(x)


class TimeConvNet(Encoder):
    """conv1d–BN–ReLU stages along the frames of a (C, bands, frames) log-mel, the C·bands rows as input
    channels; the first stage keeps the frame rate, each later one halves it: 64 × 64 → (256, 1, 8) pre-pool.
    A kernel of 5 frames (32 ms apart) makes the last stage see 33 frames, half a clip."""

    def __init__(self, in_channels: int = 1, embedding_dim: int = 128, projection_head: bool = False,
                 bands: int = 64, widths: tuple[int, ...] = (128, 128, 256, 256), kernel: int = 5):
        super().__init__(widths[-1], embedding_dim, projection_head)
        blocks, cin = [], in_channels * bands
        for i, cout in enumerate(widths):
            blocks += [nn.Conv1d(cin, cout, kernel, 1 if i == 0 else 2, kernel // 2, bias=False),
                       nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.net = nn.Sequential(*blocks)

    def body(self, x):
        b, c, f, t = x.shape
        return self.net(x.reshape(b, c * f, t))[:, :, None]  # (B, C, 1, T/8): the 2-d map the head pools


IMAGENET_STEM_ABOVE = 64  # inputs larger than this (px) get the ImageNet stem: 7×7 stride 2 and a max-pool


def build_encoder(name: str, in_channels: int = 3, embedding_dim: int = 128, projection_head: bool = False,
                  audio: bool = False, image_size: int = 32) -> Encoder:
    """The encoder ``name`` for (in_channels, image_size, image_size) inputs: the CIFAR stem up to 64 px, the
    ImageNet stem above (and for the log-mels, as the reference's audio encoder)."""
    big = audio or image_size > IMAGENET_STEM_ABOVE
    if name == "resnet18":
        return ResNet18(in_channels, embedding_dim, projection_head, imagenet_stem=big)
    if name == "resnet50":
        return ResNet50(in_channels, embedding_dim, projection_head, imagenet_stem=big)
    if name == "convnet":
        return ConvNet(in_channels, embedding_dim, projection_head)
    if name == "tcnet":
        return TimeConvNet(in_channels, embedding_dim, projection_head)
    raise ValueError(f"encoder={name!r} is unknown: allowed resnet18, resnet50, convnet, tcnet")


class Decoder(nn.Module):
    """The reconstruction branch of the class-conditional autoencoder of "Perfectly Balanced" (Chen, Fu et
    al., ICML 2022, Thanos): the encoder trains on a label-smoothed cross-entropy head plus a pixel MSE
    reconstruction of the clean input, L = CE_ls(y) + ‖dec(f(x)) − x‖². The decoder sees the pooled
    features only, never the label; "class-conditional" means it is trained jointly with the class head.

    Thanos decodes with a ResNet-18 decoder; ``Decoder`` here is a small upsample–conv stack, cheap on CPU:
    pooled features (B, D) → linear → (B, 64, 4, 4) → 3 × [2× nearest upsample, conv3×3–BN–ReLU]
    → (B, 8, 32, 32) → conv3×3 → (B, C, 32, 32). About 4 M multiply-adds per image, a quarter of the
    quick ConvNet encoder's 15 M; ``widths=(128, 64, 32, 16)`` doubles every stage (15 M, the encoder's).
    The output is linear (no sigmoid), so the target may be [0, 1] pixels or CIFAR-normalised ones;
    reconstruct whatever the encoder was fed.
    """

    def __init__(self, feature_dim: int, out_channels: int = 3, size: int = 32,
                 widths: tuple[int, ...] = (64, 32, 16, 8)):
        super().__init__()
        stages = len(widths) - 1                      # each stage doubles the side
        if size % 2 ** stages:
            raise ValueError(f"size={size} is not divisible by 2^{stages}")
        self.start = size // 2 ** stages              # 4 for 32×32 images
        self.widths = widths
        self.fc = nn.Linear(feature_dim, widths[0] * self.start ** 2)
        blocks = []
        for cin, cout in zip(widths, widths[1:]):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*blocks, nn.Conv2d(widths[-1], out_channels, 3, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(h)).view(-1, self.widths[0], self.start, self.start)  # (B, 64, 4, 4)
        return self.net(x)                                                        # (B, C, size, size)

