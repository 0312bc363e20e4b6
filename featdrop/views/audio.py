"""Log-mel spectrograms and expert views for the spoken-digit study (Tamkin et al., "Feature
Dropout", NeurIPS 2023; the reference's audio pipeline is feature_dropout.md §3.2).

Features. A fixed-length 16 kHz waveform of L = 16,640 samples (1.04 s) becomes a 64 × 64 log-mel:
an STFT with n_fft 512 (32 ms Hann window), hop 256 and ``center=False`` gives exactly
1 + (L − 512)/256 = 64 frames; 64 Slaney mel bands (librosa's default filters); power → dB with a
floor 80 dB below each example's maximum; then (dB − μ)/σ with μ, σ the mean and std of the
training set's dB values, measured once at load. The reference instead took ``power_to_db(S**2)``
(the power squared, so twice our dB values) and normalised by fixed constants (−90.293, 11.799).

Expert views (per sample random, batched, on any device, randomness from the generator passed in):
- ``spectral`` (the reference's default for audio, SpecAugment-like): on the mel *power*
  spectrogram one frequency mask then one time mask, each of width ~ U{0, …, 39} at a uniform start,
  set to 0; then dB; then Gaussian noise of std 0.25 σ (the reference: 0.25 × 11.799 dB); then normalise.
- ``waveform``: a random crop keeping a contiguous segment of U(0.08, 1)·L samples *in place* (the
  rest zeroed) and white noise of std 1/√L, in random order per sample; then the log-mel.
The viewmaker perturbs the normalised log-mel (B, 1, 64, 64) directly.
"""
from __future__ import annotations

import torch
import torchaudio

from ..data.audio import LENGTH, RATE
from .draws import normal, uniform

N_FFT, HOP, N_MELS = 512, 256, 64
FRAMES = 1 + (LENGTH - N_FFT) // HOP  # = 64
TOP_DB = 80.0
MASK_WIDTHS = 40     # mask width ~ U{0, …, MASK_WIDTHS − 1} (nlpaug's mask_factor=40)
DB_NOISE = 0.25      # spectral views: dB noise std as a fraction of σ
CROP_SCALE = (0.08, 1.0)
assert FRAMES == N_MELS == 64


class LogMel:
    """Waveforms (B, L) → normalised log-mel (B, 1, 64, 64), in steps that the views reuse."""

    def __init__(self, device: str | torch.device = "cpu", mean: float = 0.0, std: float = 1.0):
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, center=False, power=2.0,
            norm="slaney", mel_scale="slaney").to(device)
        self.mean, self.std = mean, std   # μ, σ of the training set's dB values
        self.lo, self.hi = -5.0, 5.0      # the normalised range over the training set (set by fit)

    def power(self, wave: torch.Tensor) -> torch.Tensor:
        return self.mel(wave.float())[:, None]                    # (B, 1, n_mels, frames)

    @staticmethod
    def db(power: torch.Tensor) -> torch.Tensor:
        db = 10 * torch.log10(power.clamp_min(1e-10))
        return torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - TOP_DB)  # 80 dB floor per example

    def normalise(self, db: torch.Tensor) -> torch.Tensor:
        return (db - self.mean) / self.std

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.db(self.power(wave)))

    @torch.no_grad()
    def fit(self, waves: torch.Tensor, batch: int = 512) -> "LogMel":
        """Set μ, σ (and the normalised min / max) from the dB values of ``waves (N, L)``."""
        s = s2 = 0.0
        lo, hi, count = float("inf"), float("-inf"), 0
        for i in range(0, len(waves), batch):
            db = self.db(self.power(waves[i:i + batch])).double()
            s, s2, count = s + db.sum().item(), s2 + (db ** 2).sum().item(), count + db.numel()
            lo, hi = min(lo, db.min().item()), max(hi, db.max().item())
        self.mean = s / count
        self.std = max((s2 / count - self.mean ** 2) ** 0.5, 1e-6)
        self.lo, self.hi = (lo - self.mean) / self.std, (hi - self.mean) / self.std
        return self

    @torch.no_grad()
    def invert(self, x: torch.Tensor, n_iter: int = 64) -> torch.Tensor:
        """Normalised log-mel (B, 1, 64, 64) → waveform (B, T) by mel inversion + Griffin-Lim (to listen)."""
        power = 10 ** ((x[:, 0].float().cpu() * self.std + self.mean) / 10)
        inv = torchaudio.transforms.InverseMelScale(N_FFT // 2 + 1, N_MELS, RATE, norm="slaney",
                                                    mel_scale="slaney")
        gl = torchaudio.transforms.GriffinLim(n_fft=N_FFT, hop_length=HOP, power=2.0, n_iter=n_iter,
                                              rand_init=False)
        return gl(inv(power).clamp_min(0))


# ------------------------------------------------------------------------------- spectral views
def band_masks(n: int, size: int, g: torch.Generator, device, widths: int = MASK_WIDTHS) -> torch.Tensor:
    """(n, size) bool: one band per row, width ~ U{0..widths−1} (at most size), start uniform."""
    w = (uniform(g, n, device=device) * widths).long().clamp(max=size)
    start = (uniform(g, n, device=device) * (size - w + 1)).long()
    ar = torch.arange(size, device=device)
    return (ar >= start[:, None]) & (ar < (start + w)[:, None])


def mask_power(power: torch.Tensor, g: torch.Generator, widths: int = MASK_WIDTHS):
    """One frequency mask then one time mask on the mel power (B, 1, F, T), set to 0.
    Returns (masked power, freq band (B, F), time band (B, T))."""
    b, _, f, t = power.shape
    freq = band_masks(b, f, g, power.device, widths)
    time = band_masks(b, t, g, power.device, widths)
    hit = freq[:, None, :, None] | time[:, None, None, :]    # (B, 1, F, T)
    return power.masked_fill(hit, 0.0), freq, time


def spectral_view(wave: torch.Tensor, logmel: LogMel, g: torch.Generator) -> torch.Tensor:
    """SpecAugment-like view of waveforms (B, L) → normalised log-mel (B, 1, 64, 64)."""
    power, _, _ = mask_power(logmel.power(wave), g)
    db = logmel.db(power)
    db = db + DB_NOISE * logmel.std * normal(g, *db.shape, device=db.device)
    return logmel.normalise(db)


# ------------------------------------------------------------------------------- waveform views
def crop_masks(n: int, length: int, g: torch.Generator, device, scale=CROP_SCALE) -> torch.Tensor:
    """(n, length) bool: a contiguous segment of ⌊U(scale)·length⌋ samples at a uniform start."""
    keep = ((scale[0] + (scale[1] - scale[0]) * uniform(g, n, device=device)) * length).long()
    start = (uniform(g, n, device=device) * (length - keep + 1)).long()
    ar = torch.arange(length, device=device)
    return (ar >= start[:, None]) & (ar < (start + keep)[:, None])


def waveform_augment(wave: torch.Tensor, g: torch.Generator, noise_std: float | None = None) -> torch.Tensor:
    """Crop (kept in place) and white noise, in random order per sample; wave (B, L) → (B, L)."""
    b, length = wave.shape
    keep = crop_masks(b, length, g, wave.device).to(wave.dtype)
    std = length ** -0.5 if noise_std is None else noise_std  # the reference's irfft noise: std ≈ 1/√L
    noise = std * normal(g, *wave.shape, device=wave.device, dtype=wave.dtype)
    crop_first = uniform(g, b, 1, device=wave.device) < 0.5
    return torch.where(crop_first, wave * keep + noise, (wave + noise) * keep)


def waveform_view(wave: torch.Tensor, logmel: LogMel, g: torch.Generator) -> torch.Tensor:
    return logmel(waveform_augment(wave, g))
