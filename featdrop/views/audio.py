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

Strengths (``Strengths``, from the config's ``audio_*`` fields; the reference's values by default): the
masks' widths and the dB noise of spectral views, and, for both kinds, off unless set (issue 30), on the mel
power before the masks: a time shift and a time stretch (speed), a pitch shift in mel bands (one affine
resampling per example, silence where the view runs past the clip), and after the dB a random gain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


@dataclass(frozen=True)
class Strengths:
    """How strong the expert views are; the defaults are the reference's (no shift, stretch, pitch, gain)."""
    mask_width: int = MASK_WIDTHS   # spectral: each mask's width ~ U{0, …, mask_width − 1}; 0: no masks
    db_noise: float = DB_NOISE      # spectral: dB noise std as a fraction of σ
    time_shift: float = 0.0         # shift by up to ± this fraction of the clip's frames
    time_stretch: float = 0.0       # speed × e^U(−log(1+s), log(1+s)): (1+s)× faster to (1+s)× slower
    pitch_shift: float = 0.0        # shift up to ± this many mel bands
    gain_db: float = 0.0            # loudness ± this many dB

    @property
    def warps(self) -> bool:
        return bool(self.time_shift or self.time_stretch or self.pitch_shift)


REFERENCE = Strengths()


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


def warp(power: torch.Tensor, g: torch.Generator, s: Strengths) -> torch.Tensor:
    """Per example, one bilinear resampling of the mel power (B, 1, F, T): output frame t reads input frame
    a·t + shift (a the speed), output band f reads band f + pitch; zero power (silence) outside the clip."""
    b, _, f, t = power.shape
    u = uniform(g, b, 3, device=power.device) * 2 - 1                           # (B, 3) in [−1, 1)
    theta = torch.zeros(b, 2, 3, device=power.device)
    theta[:, 0, 0] = torch.exp(u[:, 0] * math.log1p(s.time_stretch))            # a: time scale
    theta[:, 0, 2] = u[:, 1] * 2 * s.time_shift                                  # [−1, 1] spans the clip
    theta[:, 1, 1] = 1.0
    theta[:, 1, 2] = u[:, 2] * 2 * s.pitch_shift / f                              # bands → grid units
    grid = F.affine_grid(theta, list(power.shape), align_corners=False)
    return F.grid_sample(power.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def gain(db: torch.Tensor, g: torch.Generator, s: Strengths) -> torch.Tensor:
    """A loudness change of U(−gain_db, gain_db) dB per example (a shift of the whole dB map)."""
    if not s.gain_db:
        return db
    return db + (uniform(g, db.shape[0], 1, 1, 1, device=db.device) * 2 - 1) * s.gain_db


def spectral_view(wave: torch.Tensor, logmel: LogMel, g: torch.Generator,
                  s: Strengths = REFERENCE) -> torch.Tensor:
    """SpecAugment-like view of waveforms (B, L) → normalised log-mel (B, 1, 64, 64)."""
    power = logmel.power(wave)
    if s.warps:
        power = warp(power, g, s)
    if s.mask_width:
        power, _, _ = mask_power(power, g, s.mask_width)
    db = gain(logmel.db(power), g, s)
    if s.db_noise:
        db = db + s.db_noise * logmel.std * normal(g, *db.shape, device=db.device)
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


def waveform_view(wave: torch.Tensor, logmel: LogMel, g: torch.Generator,
                  s: Strengths = REFERENCE) -> torch.Tensor:
    """Crop and white noise on the waveform, then the log-mel; the shift, stretch, pitch and gain when set."""
    wave = waveform_augment(wave, g)
    if not (s.warps or s.gain_db):
        return logmel(wave)
    power = logmel.power(wave)
    if s.warps:
        power = warp(power, g, s)
    return logmel.normalise(gain(logmel.db(power), g, s))
