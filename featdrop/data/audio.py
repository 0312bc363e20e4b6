"""Spoken digits with background noise: the audio study of Tamkin et al., "Feature Dropout"
(NeurIPS 2023; feature_dropout.md §3.2, §4.4, §5).

Main label: the spoken digit (10 classes). Alternate label: the background-noise recording mixed in
(babble, traffic, machinery = 0, 1, 2 by default; any WAV files in ``<data_dir>/noise/``, one class each).

Data. One loader for folders of ``{digit}_{speaker}_{index}.wav`` files (searched recursively, so a
flat folder and per-speaker sub-folders both work):
- ``audiomnist``: ``<data_dir>/audio_mnist/`` (48 kHz, 60 speakers; download it yourself). Split by
  speaker as the reference: 48 train speakers (its 36 "train" + 12 "val"), 12 test speakers.
- ``fsdd``: ``<data_dir>/fsdd/recordings/`` (8 kHz, 6 speakers). Split by speaker: test = the two
  alphabetically last speakers, "theo" and "yweweler" (1,000 clips); train = the other four (2,000).
Every clip is resampled to 16 kHz and cut or zero-padded to L = 16,640 samples (1.04 s; the
reference: 50,000 at 48 kHz). Longer clips: the test split takes the first window; training takes
the first or the last window (the reference's choice), drawn per (seed, draw). Decoded clips are
cached once as int16 tensors in ``<data_dir>/featdrop_cache/``.

Noise. Each recording is resampled to 16 kHz and peak-normalised to ``noise_volume`` (reference
0.05); an L-sample segment from a uniform offset anywhere in the recording is added to the speech
before the spectrogram (the reference used only the first or last 50,000 samples). Classes are
balanced (``overlays.balanced_labels``). Draws come from a generator seeded by (seed, split, draw):
the test split always uses draw 0; training uses draw = epoch under ``overlay_resample``, else 0.
``noise_draw="shared"``: both views see the same mixture, raw items (N, L). ``"independent"`` (the
reference): two mixtures of the same speech with independent noise draws, raw items (N, 2, L), so
the two views' noise classes differ for about 2/3 of items; the alternate label is view 1's class.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

from ..errors import DataNotFoundError
from ..rundir import atomic_save
from .base import DIGIT_NAMES, Overlay, Split, parse_names, read_cache
from .images import check_subset, overlay_generator
from .overlays import balanced_labels

RATE = 16_000        # Hz, every clip and noise recording is resampled to this
LENGTH = 16_640      # samples, 1.04 s (reference: 50,000 at 48 kHz = 1.042 s)
# The audio overlay's record. Its class names are the config's noise_classes (default below); ε is in
# standard deviations of the z-scored log-mel (the reference's 0.125, feature_dropout.md §1.4), up to 5.
DEFAULT_NOISE_CLASSES = "babble,traffic,machinery"
RECORDS = (Overlay("noise", "audio", alt_names=parse_names(DEFAULT_NOISE_CLASSES), budget=0.125,
                   budget_max=5.0, main_names=DIGIT_NAMES),)
CACHE_VERSION = 1
FOLDERS = {"audiomnist": "audio_mnist", "fsdd": "fsdd/recordings"}
_AUDIOMNIST_TRAIN = (28, 56, 7, 19, 35, 1, 6, 16, 23, 34, 46, 53, 36, 57, 9, 24, 37, 2,
                     8, 17, 29, 39, 48, 54, 43, 58, 14, 25, 38, 3, 10, 20, 30, 40, 49, 55)
_AUDIOMNIST_VAL = (12, 47, 59, 15, 27, 41, 4, 11, 21, 31, 44, 50)   # the reference trains on these too
_AUDIOMNIST_TEST = (26, 52, 60, 18, 32, 42, 5, 13, 22, 33, 45, 51)
# (train speakers or None = every speaker not in test, test speakers)
SPEAKER_SPLITS = {
    "audiomnist": (tuple(f"{s:02d}" for s in _AUDIOMNIST_TRAIN + _AUDIOMNIST_VAL),
                   tuple(f"{s:02d}" for s in _AUDIOMNIST_TEST)),
    "fsdd": (None, ("theo", "yweweler")),
}
HOW_TO_GET = {
    "audiomnist": "AudioMNIST has no automatic download: clone https://github.com/soerenab/AudioMNIST "
                  "and copy (or link) its data/ folder, with the per-speaker folders 01 … 60, to {folder}",
    "fsdd": "get the Free Spoken Digit Dataset "
            "(https://github.com/Jakobovski/free-spoken-digit-dataset) and copy "
            "its recordings/ folder to {folder}, or unpack an offline copy (fsdd.tar.gz) into {data_dir}",
}


# ------------------------------------------------------------------------------------- decoding
def read_wav(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """A WAV file as float32 mono (T,) in [-1, 1] and its sample rate (scipy: no torchcodec needed)."""
    from scipy.io import wavfile

    rate, x = wavfile.read(path)
    if x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128) / 128
    elif np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(-np.iinfo(x.dtype).min)
    x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    return (x.mean(1) if x.dim() == 2 else x), int(rate)


def parse_name(path: str | os.PathLike) -> tuple[int, str, int]:
    """``{digit}_{speaker}_{index}.wav`` → (digit, speaker, index); numeric speakers as two digits."""
    fields = Path(path).stem.split("_")
    if len(fields) != 3 or not fields[0].isdigit() or not fields[2].isdigit() or not 0 <= int(fields[0]) <= 9:
        raise ValueError(f"{path}: expected a file named {{digit}}_{{speaker}}_{{index}}.wav with digit 0-9")
    speaker = f"{int(fields[1]):02d}" if fields[1].isdigit() else fields[1]
    return int(fields[0]), speaker, int(fields[2])


def resample(wave: torch.Tensor, rate: int) -> torch.Tensor:
    return wave if rate == RATE else torchaudio.functional.resample(wave, rate, RATE)


def windows(wave: torch.Tensor, length: int = LENGTH) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(first window, zero-padded to ``length``; last window, or None when the clip fits)."""
    if len(wave) <= length:
        return torch.nn.functional.pad(wave, (0, length - len(wave))), None
    return wave[:length], wave[-length:]


def _int16(x: torch.Tensor) -> torch.Tensor:
    return (x * 32768).round().clamp(-32768, 32767).to(torch.int16)


def decode_folder(folder: Path) -> dict:
    """Decode every ``*.wav`` under ``folder`` (recursively, sorted) into int16 windows and labels."""
    files = sorted(folder.rglob("*.wav"))
    heads, tails, long, digits, speakers = [], [], [], [], []
    for i, f in enumerate(files):
        digit, speaker, _ = parse_name(f)
        head, tail = windows(resample(*read_wav(f)))
        heads.append(_int16(head))
        if tail is not None:
            long.append(i)
            tails.append(_int16(tail))
        digits.append(digit)
        speakers.append(speaker)
    names = sorted(set(speakers))
    return {"version": CACHE_VERSION, "n_files": len(files), "head": torch.stack(heads),
            "long": torch.tensor(long, dtype=torch.int64),
            "tail": torch.stack(tails) if tails else torch.zeros(0, LENGTH, dtype=torch.int16),
            "digits": torch.tensor(digits, dtype=torch.int64), "speakers": names,
            "speaker": torch.tensor([names.index(s) for s in speakers], dtype=torch.int64)}


def load_clips(data_dir: str | os.PathLike, dataset: str) -> dict:
    """All clips of ``dataset`` (audiomnist | fsdd), decoded once and cached."""
    if dataset not in FOLDERS:
        raise ValueError(f"audio_dataset={dataset!r} is invalid: allowed {', '.join(FOLDERS)}")
    data_dir = Path(data_dir)
    folder = data_dir / FOLDERS[dataset]
    n_files = sum(1 for _ in folder.rglob("*.wav")) if folder.is_dir() else 0
    cache = data_dir / "featdrop_cache" / f"{dataset}_{RATE}hz_{LENGTH}.pt"
    blob = read_cache(cache)  # None, with a warning, when the file is damaged: decoded again below
    if blob is not None and blob.get("version") == CACHE_VERSION and (n_files == 0 or
                                                                      blob.get("n_files") == n_files):
        return blob
    if n_files == 0:
        raise DataNotFoundError(
            f"{dataset} not found: no {{digit}}_{{speaker}}_{{index}}.wav files under {folder} "
            f"(nor a cache at "
            f"{cache}). To fix: " + HOW_TO_GET[dataset].format(folder=folder, data_dir=data_dir)
            + ", or point data_dir / FEATDROP_DATA at a folder that holds it.")
    blob = decode_folder(folder)
    atomic_save(blob, cache)
    return blob


def split_indices(clips: dict, dataset: str, split: str) -> torch.Tensor:
    """Indices of the clips of ``split`` (train | test), chosen by speaker."""
    train, test = SPEAKER_SPLITS[dataset]
    names = clips["speakers"]
    test_ids = [i for i, s in enumerate(names) if s in test]
    train_ids = [i for i, s in enumerate(names) if (s in train if train is not None else s not in test)]
    assert not set(train_ids) & set(test_ids), "a speaker is in both splits"
    ids = torch.tensor(train_ids if split == "train" else test_ids, dtype=torch.int64)
    idx = torch.nonzero(torch.isin(clips["speaker"], ids)).flatten()
    if len(idx) == 0:
        wanted = test if split == "test" else (train or f"any speaker but {test}")
        raise DataNotFoundError(f"{dataset}: no {split} clips (speakers {wanted}) among the speakers found: "
                                f"{names}")
    return idx


# ---------------------------------------------------------------------------------------- noise
def load_noise(data_dir: str | os.PathLike, names: list[str], volume: float) -> list[torch.Tensor]:
    """``<data_dir>/noise/<name>.wav`` per class, resampled, peak-normalised to ``volume``: (T_k,) each."""
    folder = Path(data_dir) / "noise"
    paths = [folder / f"{n}.wav" for n in names]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise DataNotFoundError(
            f"background-noise recordings missing: {', '.join(str(p) for p in missing)}. The overlay 'noise' "
            f"expects one WAV file per class in {folder}: {', '.join(p.name for p in paths)} "
            f"(alternate label = "
            f"position in noise_classes). The reference's recordings are the UT-Dallas noise recordings "
            f"(Saki & Kehtarnavaz 2016) as shipped in the feature-dropout repository's noisedata/: "
            f"BabbleNoise/Babble1.wav → babble.wav, DrivingcarNoise/Traffic10.wav → traffic.wav, "
            f"MachineryNoise/Machinery1.wav → machinery.wav.")
    out = []
    for p in paths:
        rec = resample(*read_wav(p))
        if len(rec) < LENGTH:  # a short recording is looped so any offset has a full segment
            rec = rec.repeat(LENGTH // max(1, len(rec)) + 1)
        out.append(rec * (volume / rec.abs().max().clamp_min(1e-12)))
    return out


def sample_noise(n: int, lengths: list[int], g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced classes (n,) and uniform segment offsets (n,) within each class's recording."""
    classes = balanced_labels(n, len(lengths), g)
    room = torch.tensor(lengths)[classes] - LENGTH + 1
    return classes, (torch.rand(n, generator=g) * room).long()


def mix(speech: torch.Tensor, noise: list[torch.Tensor], classes: torch.Tensor,
        offsets: torch.Tensor) -> torch.Tensor:
    """speech (N, L) + the segment noise[classes[i]][offsets[i] : offsets[i] + L] of each item."""
    out = speech.clone()
    classes, offsets = classes.to(speech.device), offsets.to(speech.device)
    for k, rec in enumerate(noise):
        idx = torch.nonzero(classes == k).flatten()
        if len(idx):
            out[idx] += rec.unfold(0, speech.shape[1], 1)[offsets[idx]]  # (n_k, L) segments, one gather
    return out


# ---------------------------------------------------------------------------------------- splits
@dataclass
class AudioSplit(Split):
    # images: float (N, L) mixtures, or (N, 2, L) with independent noise draws; base: the speech (N, L)
    noise_classes: torch.Tensor | None = None  # (N,) or (N, 2), int64
    noise_offsets: torch.Tensor | None = None  # same shape: segment starts in each recording
    noise_names: tuple[str, ...] = ()


class SpokenDigitSet:
    """One split on the device; ``draw(d)`` mixes in noise drawn from (seed, split, d)."""

    def __init__(self, clips: dict, dataset: str, split: str, noise: list[torch.Tensor], names: list[str], *,
                 seed: int = 0, subset: int | None = None, two_per_item: bool = False, device="cpu"):
        idx = split_indices(clips, dataset, split)
        if subset is not None:
            check_subset(subset, len(idx), split, "clips")
            idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(12345))[:subset]]
        self.split, self.seed, self.noise, self.names, self.two = \
            split, seed, noise, tuple(names), two_per_item
        self.head = (clips["head"][idx].float() / 32768).to(device)          # (N, L)
        row = torch.full((len(clips["digits"]),), -1, dtype=torch.int64)
        row[clips["long"]] = torch.arange(len(clips["long"]))
        sel = row[idx]
        # items with a distinct last window
        self.long_pos = torch.nonzero(sel >= 0).flatten().to(device)
        self.tail = (clips["tail"][sel[sel >= 0]].float() / 32768).to(device)  # (M, L)
        self.labels = clips["digits"][idx].to(device)
        self.speakers = sorted({clips["speakers"][i] for i in clips["speaker"][idx].tolist()})
        self._cache: tuple[int, AudioSplit] | None = None

    def draw(self, draw: int = 0) -> AudioSplit:
        if self._cache is not None and self._cache[0] == draw:
            return self._cache[1]
        g = overlay_generator(self.seed, self.split, draw)
        speech = self.head
        if self.split == "train" and len(self.long_pos):  # first or last window, per item
            last = (torch.rand(len(self.long_pos), generator=g) < 0.5).to(speech.device)
            speech = speech.clone()
            speech[self.long_pos[last]] = self.tail[last]
        lengths = [len(r) for r in self.noise]
        c1, o1 = sample_noise(len(speech), lengths, g)
        raw = mix(speech, self.noise, c1, o1)
        classes, offsets = c1, o1
        if self.two:
            c2, o2 = sample_noise(len(speech), lengths, g)
            raw = torch.stack([raw, mix(speech, self.noise, c2, o2)], 1)    # (N, 2, L)
            classes, offsets = torch.stack([c1, c2], 1), torch.stack([o1, o2], 1)
        dev = speech.device
        out = AudioSplit(raw, self.labels, c1.to(dev), speech, noise_classes=classes.to(dev),
                         noise_offsets=offsets.to(dev), noise_names=self.names)
        self._cache = (draw, out)
        return out
