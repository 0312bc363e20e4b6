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
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Decoder(nn.Module):
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


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel MSE, mean over batch, channels and pixels; computed in float32."""
    return F.mse_loss(recon.float(), target.float())
