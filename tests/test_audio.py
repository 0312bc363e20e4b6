"""Spoken digits + background noise: the loader, the noise overlay, the spectrogram views, and rundir."""
import json
import math

import numpy as np
import pytest
import torch
import torchaudio
from conftest import DATA, run_notebook
from scipy.io import wavfile

from featdrop import config, train
from featdrop.data import audio
from featdrop.data.audio import LENGTH, RATE
from featdrop.errors import DataNotFoundError
from featdrop.views import audio as audio_views
from featdrop.views import modality
from featdrop.views.viewmaker import Viewmaker

NAMES = ["babble", "traffic", "machinery"]


def write_wav(path, x, rate):
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, (np.clip(x, -1, 1) * 32767).astype(np.int16))


def tone(digit, seconds, rate, seed):
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return 0.3 * np.sin(2 * np.pi * (200 + 100 * digit) * t) + 0.02 * rng.standard_normal(len(t))


def write_noise(folder, rate=8000, seconds=2.0):
    rng = np.random.default_rng(0)
    n = int(rate * seconds)
    sigs = [rng.standard_normal(n) * 0.1, np.cumsum(rng.standard_normal(n)) * 0.01,
            0.2 * np.sin(2 * np.pi * 120 * np.arange(n) / rate)]
    for name, x in zip(NAMES, sigs):
        write_wav(folder / f"{name}.wav", x / np.abs(x).max() * 0.5, rate)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny FSDD-like set: speakers alice, bob (train), theo, yweweler (test), 8 kHz; three noises."""
    root = tmp_path_factory.mktemp("audio")
    rec = root / "fsdd" / "recordings"
    for s, (speaker, reps) in enumerate((("alice", 7), ("bob", 7), ("theo", 4), ("yweweler", 4))):
        for digit in range(10):
            for i in range(reps):
                clip = tone(digit, 0.3 + 0.05 * i, 8000, s * 1000 + digit * 10 + i)
                write_wav(rec / f"{digit}_{speaker}_{i}.wav", clip, 8000)
    write_noise(root / "noise")
    return root


# the reference's spectral views (AUDIO_REFERENCE_VIEWS; the paper preset's): the quick preset's differ
REFERENCE = dict(audio_mask_width=40, audio_db_noise=0.25, audio_time_shift=0.0, audio_time_stretch=0.0,
                 audio_pitch_shift=0.0, audio_gain_db=0.0)


def load(data_dir, **kw):
    cfg = config.make(overlay="noise", preset="quick", data_dir=str(data_dir), **kw)
    cfg = config.resolve(cfg, cuda_available=False)
    return modality.load(cfg, torch.device("cpu"))


# ------------------------------------------------------------------------------------ the loader
def test_names_give_digit_speaker_index():
    assert audio.parse_name("data/x/7_george_31.wav") == (7, "george", 31)   # the digit is the FIRST field
    assert audio.parse_name("audio_mnist/05/3_5_12.wav") == (3, "05", 12)    # numeric speakers as two digits
    with pytest.raises(ValueError, match="digit"):
        audio.parse_name("george_7_31.wav")


def test_loader_resamples_pads_crops_and_splits_by_speaker(tmp_path, monkeypatch):
    # AudioMNIST layout: per-speaker folders, 48 kHz; speaker 01 is a train speaker, 26 and 52 test speakers
    folder = tmp_path / "audio_mnist"
    short, long = tone(3, 0.5, 48000, 0), tone(8, 1.5, 48000, 1)
    write_wav(folder / "01" / "3_01_0.wav", short, 48000)
    write_wav(folder / "01" / "8_01_1.wav", long, 48000)
    write_wav(folder / "26" / "5_26_0.wav", tone(5, 0.4, 48000, 2), 48000)
    write_wav(folder / "52_flat" / "9_52_0.wav", tone(9, 0.4, 48000, 3), 48000)
    clips = audio.load_clips(tmp_path, "audiomnist")
    assert clips["head"].shape == (4, LENGTH) and clips["digits"].tolist() == [3, 8, 5, 9]
    tr, te = (audio.split_indices(clips, "audiomnist", "train"),
              audio.split_indices(clips, "audiomnist", "test"))
    spk = lambda idx: {clips["speakers"][i] for i in clips["speaker"][idx].tolist()}
    assert spk(tr) == {"01"} and spk(te) == {"26", "52"} and not spk(tr) & spk(te)
    # resampling 48 → 16 kHz and zero-padding, against torchaudio directly (int16 storage: 1/32768 steps)
    q = lambda x: torch.from_numpy((np.clip(x, -1, 1) * 32767).astype(np.int16).astype(np.float32) / 32768)
    ref = torchaudio.functional.resample(q(short), 48000, RATE)
    head = clips["head"][0].float() / 32768
    assert torch.allclose(head[:len(ref)], ref, atol=2e-4) and (head[len(ref):] == 0).all()
    ref = torchaudio.functional.resample(q(long), 48000, RATE)
    assert clips["long"].tolist() == [1]                       # 1.5 s > 1.04 s: first and last windows
    assert torch.allclose(clips["head"][1].float() / 32768, ref[:LENGTH], atol=2e-4)
    assert torch.allclose(clips["tail"][0].float() / 32768, ref[-LENGTH:], atol=2e-4)
    # cached: a second load does not decode
    monkeypatch.setattr(audio, "decode_folder", lambda f: pytest.fail("decoded again"))
    assert torch.equal(audio.load_clips(tmp_path, "audiomnist")["head"], clips["head"])


def test_train_takes_first_or_last_window_per_draw_test_the_first(tiny_dir, tmp_path):
    import shutil

    shutil.copytree(tiny_dir / "noise", tmp_path / "noise")
    write_wav(tmp_path / "fsdd" / "recordings" / "1_alice_0.wav", tone(1, 2.0, 8000, 5), 8000)
    write_wav(tmp_path / "fsdd" / "recordings" / "2_theo_0.wav", tone(2, 2.0, 8000, 6), 8000)
    clips = audio.load_clips(tmp_path, "fsdd")
    noise = audio.load_noise(tmp_path, NAMES, 0.05)
    tr = audio.SpokenDigitSet(clips, "fsdd", "train", noise, NAMES, seed=0)
    picks = {torch.equal(tr.draw(d).base[0], tr.tail[0]) for d in range(12)}
    assert picks == {True, False} and torch.equal(tr.draw(3).base, tr.draw(3).base)
    te = audio.SpokenDigitSet(clips, "fsdd", "test", noise, NAMES, seed=0)
    assert all(torch.equal(te.draw(d).base[0], te.head[0]) for d in range(4))


def test_missing_data_names_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(DataNotFoundError, match="no automatic download") as err:
        audio.load_clips(tmp_path, "audiomnist")
    assert str(tmp_path / "audio_mnist") in str(err.value) and "soerenab/AudioMNIST" in str(err.value)
    with pytest.raises(DataNotFoundError) as err:
        audio.load_noise(tmp_path, NAMES, 0.05)
    msg = str(err.value)
    assert all(f"{n}.wav" in msg for n in NAMES) and "Saki & Kehtarnavaz 2016" in msg and "noisedata" in msg


# ------------------------------------------------------------------------------------- the noise
def test_noise_is_peak_normalised_and_added_as_the_chosen_segment(tiny_dir):
    noise = audio.load_noise(tiny_dir, NAMES, 0.05)
    assert [round(r.abs().max().item(), 6) for r in noise] == [0.05] * 3
    assert all(len(r) == 2 * RATE for r in noise)          # 2 s at 8 kHz → 16 kHz
    d = load(tiny_dir, subset=None)
    s = d.train.draw(0)
    assert (torch.equal(s.alt_labels, s.noise_classes)
            and torch.bincount(s.alt_labels).tolist() == [47, 47, 46])
    added = s.images - s.base
    for i in range(0, len(s), 17):
        c, o = int(s.noise_classes[i]), int(s.noise_offsets[i])
        assert torch.allclose(added[i], noise[c][o:o + LENGTH], atol=1e-7)
    assert len(set(s.noise_offsets.tolist())) > 100           # offsets anywhere, not two fixed segments
    assert torch.equal(d.test.images, load(tiny_dir, subset=None).test.images)  # the test draw is fixed


def test_noise_shared_by_default_independent_draws_differ_two_thirds(tiny_dir):
    shared = load(tiny_dir)
    raw = shared.train.draw(0).images[:8]
    assert raw.dim() == 2 and shared.modality.pair(raw)[0] is shared.modality.pair(raw)[1]
    ind = load(tiny_dir, noise_draw="independent", test_subset=None)
    s = ind.train.draw(0)
    assert s.images.shape == (140, 2, LENGTH) and s.noise_classes.shape == (140, 2)
    assert torch.equal(s.alt_labels, s.noise_classes[:, 0])  # the alternate label is view 1's class
    r1, r2 = ind.modality.pair(s.images)
    assert torch.equal(r1, s.images[:, 0]) and torch.equal(r2, s.images[:, 1])
    both = torch.cat([s.noise_classes, ind.test.noise_classes])
    differ = (both[:, 0] != both[:, 1]).float().mean().item()
    assert 0.55 < differ < 0.78                               # 2/3 expected for three classes
    for i in range(0, 140, 13):                               # both channels: the same speech
        c, o = s.noise_classes[i], s.noise_offsets[i]
        for v in range(2):
            seg = ind.train.noise[int(c[v])][int(o[v]):int(o[v]) + LENGTH]
            assert torch.allclose(s.images[i, v] - s.base[i], seg, atol=1e-7)


# ------------------------------------------------------------------------------------- the views
def test_log_mel_is_64_by_64_and_normalised_on_the_training_set(tiny_dir):
    d = load(tiny_dir, subset=None)
    x = d.modality.clean(d.train.draw(0).images)
    assert x.shape == (140, 1, 64, 64)
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3
    db = audio_views.LogMel.db(d.modality.logmel.power(d.train.draw(0).images[:4]))
    assert torch.allclose(db.amax((2, 3)) - db.amin((2, 3)), torch.full((4, 1), 80.0), atol=1e-3)


def test_spectral_masks_per_sample_zero_in_power_width_at_most_39():
    g = torch.Generator().manual_seed(0)
    power = torch.rand(256, 1, 64, 64) + 0.1
    masked, freq, time = audio_views.mask_power(power, g)
    for band in (freq, time):
        widths = band.sum(1)
        assert widths.max() <= 39 and widths.min() == 0 and len(set(widths.tolist())) > 20
        # each band is contiguous: one rising edge at most
        assert ((band.int().diff(dim=1) == 1).sum(1).max() <= 1
                and (band.int().diff(dim=1) == -1).sum(1).max() <= 1)
        starts = band.int().argmax(1)[widths > 0]
        assert len(set(starts.tolist())) > 20                 # different samples, different positions
    hit = freq[:, None, :, None] | time[:, None, None, :]
    assert (masked[hit] == 0).all() and torch.equal(masked[~hit], power[~hit])


def test_spectral_view_is_mask_then_db_then_noise_then_normalise(tiny_dir):
    d = load(tiny_dir, **REFERENCE)
    wave, lm = d.train.draw(0).images[:16], d.modality.logmel
    view = d.modality.expert(wave, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    masked, _, _ = audio_views.mask_power(lm.power(wave), g)
    db = lm.db(masked) + 0.25 * lm.std * torch.randn(16, 1, 64, 64, generator=g)
    assert torch.allclose(view, (db - lm.mean) / lm.std, atol=1e-5)


def test_waveform_crop_keeps_one_contiguous_segment_in_place():
    g = torch.Generator().manual_seed(0)
    wave = 1 + torch.rand(512, 1000)                          # never zero
    out = audio_views.waveform_augment(wave, g, noise_std=0.0)
    kept = out != 0
    assert ((kept.int().diff(dim=1) == 1).sum(1) + kept[:, 0].int()).max() == 1   # one segment per row
    assert torch.equal(out[kept], wave[kept])                                 # in place, unchanged
    frac = kept.float().mean(1)
    assert frac.min() >= 0.08 - 1e-3 and frac.max() <= 1 and frac.std() > 0.2
    noisy = audio_views.waveform_augment(torch.zeros(512, LENGTH), g)         # white noise std 1/√L
    assert abs(noisy[noisy != 0].std().item() * math.sqrt(LENGTH) - 1) < 0.05


def burst(frames=slice(24, 32), bands=slice(20, 28)):
    """Mel power (64, 1, 64, 64): a bright rectangle (the same in every row) on silence."""
    power = torch.zeros(64, 1, 64, 64)
    power[:, :, bands, frames] = 1.0
    return power


def centre(power, dim):
    """Centre of mass of each row's power along ``dim`` (2: bands, 3: frames)."""
    w = power.sum(dim=5 - dim)[:, 0]                          # (B, size)
    pos = torch.arange(w.shape[1], dtype=torch.float32)
    return (w * pos).sum(1) / w.sum(1)


def test_time_shift_moves_each_view_by_its_drawn_frames_and_pads_with_silence():
    s = audio_views.Strengths(time_shift=0.25)
    out = audio_views.warp(burst(), torch.Generator().manual_seed(0), s)
    u = torch.rand(64, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1   # the draws warp makes
    moved = u[:, 1] * 0.25 * 64                              # frames: output t reads input t + shift
    assert torch.allclose(centre(out, 3), 27.5 - moved, atol=0.05)
    assert torch.allclose(centre(out, 2), torch.full((64,), 23.5), atol=1e-4)  # the bands stay
    assert moved.abs().max() > 12 and moved.abs().max() <= 16                  # up to a quarter of the clip
    assert torch.allclose(out.sum((1, 2, 3)), burst().sum((1, 2, 3)), rtol=1e-4)  # nothing added or lost
    assert (out[:, :, :20] == 0).all() and (out[:, :, 28:] == 0).all() and out.min() >= 0  # silence elsewhere
    far = (torch.arange(64) - (27.5 - moved)[:, None]).abs() > 5        # (B, frames) away from the burst
    assert (out[:, 0, 20:28].permute(1, 0, 2)[:, far] == 0).all()


def test_pitch_shift_moves_the_bands_and_a_stretch_changes_the_duration():
    g = torch.Generator().manual_seed(1)
    out = audio_views.warp(burst(), g, audio_views.Strengths(pitch_shift=6))
    u = torch.rand(64, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert torch.allclose(centre(out, 2), 23.5 - u[:, 2] * 6, atol=0.05)
    assert torch.allclose(centre(out, 3), torch.full((64,), 27.5), atol=1e-4)
    out = audio_views.warp(burst(), torch.Generator().manual_seed(2), audio_views.Strengths(time_stretch=0.5))
    speed = torch.exp((torch.rand(64, 3, generator=torch.Generator().manual_seed(2))[:, 0] * 2 - 1)
                      * math.log(1.5))
    duration = out.sum((1, 2, 3)) / 8                         # frames of the 8-band-high burst
    assert torch.allclose(duration, 8 / speed, rtol=0.02)     # 1.5× faster: 8 frames → 5.3
    assert speed.min() < 0.75 and speed.max() > 1.35


def test_gain_shifts_the_whole_log_mel_by_one_draw_per_clip(tiny_dir):
    d = load(tiny_dir, **{**REFERENCE, "audio_mask_width": 0, "audio_db_noise": 0.0, "audio_gain_db": 6.0})
    wave, lm = d.train.draw(0).images[:32], d.modality.logmel
    shift = (d.modality.expert(wave, torch.Generator().manual_seed(4)) - lm(wave)) * lm.std  # dB
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift), atol=1e-3)            # one per clip
    assert shift.abs().max() <= 6 and shift.abs().max() > 4 and shift[:, 0, 0, 0].std() > 2


def test_the_quick_recipe_by_default_the_reference_in_the_paper_preset_and_named_fields_change_the_views(
        tiny_dir):
    wave = load(tiny_dir).train.draw(0).images[:8]
    reference = REFERENCE
    views = {}
    recipe = dict(audio_mask_width=0, audio_db_noise=0.25, audio_time_shift=0.3, audio_time_stretch=0.2,
                  audio_gain_db=10.0)
    for name, kw in (("default", {}), ("recipe", recipe),
                     ("reference", reference), ("masks", dict(audio_mask_width=8)),
                     ("shifted less", dict(audio_time_shift=0.1)),
                     ("waveform", dict(audio_views="waveform", audio_pitch_shift=3.0))):
        d = load(tiny_dir, **kw)
        views[name] = d.modality.expert(wave, torch.Generator().manual_seed(5))
    assert torch.equal(views["default"], views["recipe"])        # the quick preset's views: issue 30's recipe
    for name in ("reference", "masks", "shifted less", "waveform"):
        assert not torch.allclose(views[name], views["default"]) and views[name].shape == (8, 1, 64, 64)
    cfg = config.resolve(config.make(overlay="noise", preset="paper"), cuda_available=False)
    assert {k: getattr(cfg, k) for k in reference} == reference  # the paper preset: the reference's views
    assert config.resolve(config.make(overlay="shapes"), cuda_available=False).audio_mask_width is None


def test_tcnet_convolves_along_time_with_the_bands_as_channels():
    from featdrop.models import build_encoder

    torch.manual_seed(0)
    net = build_encoder("tcnet", 1, audio=True).eval()
    x = torch.randn(4, 1, 64, 64)
    pooled, prepool = net.features(x)
    assert pooled.shape == (4, 256) and prepool.shape == (4, 256 * 8) and net(x).shape == (4, 128)
    late = x.clone()
    late[..., 48:] = torch.randn(4, 1, 64, 16)               # change the last quarter of the frames only
    a, b = (net.body(v)[:, :, 0] for v in (x, late))         # (B, 256, 8): one column per 8 frames
    assert torch.equal(a[..., :2], b[..., :2]) and not torch.allclose(a[..., -1], b[..., -1])
    shifted = torch.roll(x, 8, dims=3)                       # 8 frames later: one output step later
    c = net.body(shifted)[:, :, 0]
    assert torch.allclose(c[..., 3:6], a[..., 2:5], atol=1e-4)   # away from the edges, the same features


def test_viewmaker_budget_on_spectrograms(tiny_dir):
    d = load(tiny_dir)
    x = d.modality.base(d.train.draw(0).images[:8])
    torch.manual_seed(0)
    vm = Viewmaker(1, 0.125, width=8)
    delta = vm.perturbation(x, torch.Generator().manual_seed(0))
    assert delta.shape == (8, 1, 64, 64)
    assert torch.allclose(delta.abs().mean((1, 2, 3)), torch.full((8,), 0.125), rtol=2e-3)
    assert d.modality.clamp == (d.modality.logmel.lo, d.modality.logmel.hi) and d.modality.clamp[0] < -1


def test_griffin_lim_inversion_keeps_the_pitch():
    t = torch.arange(LENGTH) / RATE
    lm = audio_views.LogMel()
    x = lm(0.3 * torch.sin(2 * math.pi * 1000 * t)[None])
    wave = lm.invert(x, n_iter=16)[0]
    peak = torch.fft.rfft(wave).abs().argmax().item() * RATE / len(wave)
    assert abs(peak - 1000) < 100


def test_config_noise_classes_and_quick_preset():
    with pytest.raises(config.ConfigError, match="noise_classes"):
        config.make(overlay="noise", noise_classes="babble,babble")
    cfg = config.resolve(config.make(overlay="noise", preset="quick"), cuda_available=False)
    assert cfg.subset is None and cfg.budget == 0.125 and cfg.encoder == "tcnet"
    assert (cfg.epochs, cfg.batch_size, cfg.lr_schedule) == (10, 64, "cosine")
    paper = config.resolve(config.make(overlay="noise", preset="paper"), cuda_available=False)
    assert paper.encoder == "resnet18"


# ----------------------------------------------------------------------------- the offline copy
@pytest.mark.skipif(not (DATA / "fsdd" / "recordings").is_dir(), reason=f"no FSDD copy under {DATA}")
def test_offline_fsdd_copy():
    clips = audio.load_clips(DATA, "fsdd")
    assert clips["head"].shape == (3000, LENGTH) and clips["speakers"] == sorted(clips["speakers"])
    tr, te = audio.split_indices(clips, "fsdd", "train"), audio.split_indices(clips, "fsdd", "test")
    assert (len(tr), len(te)) == (2000, 1000)
    assert torch.bincount(clips["digits"][tr]).tolist() == [200] * 10
    test_speakers = {clips["speakers"][i] for i in clips["speaker"][te].tolist()}
    train_speakers = {clips["speakers"][i] for i in clips["speaker"][tr].tolist()}
    assert test_speakers == {"theo", "yweweler"} and len(train_speakers) == 4


# ------------------------------------------------------------------------------------------ runs
TINY = dict(overlay="noise", preset="quick", oracles=False, epochs=1, subset=64, test_subset=32,
            batch_size=32, viewmaker_width=8, progress=False, knn_k=20)


def test_tiny_pretraining_run_writes_finite_metrics(tiny_dir, tmp_path):
    m = train.pretrain(views="expert", audio_views="waveform", data_dir=str(tiny_dir),
                       out_dir=str(tmp_path / "run"), **TINY)
    for key in ("probe_main", "probe_alt", "knn_main", "knn_alt", "final_loss"):
        assert math.isfinite(m[key]) and (key == "final_loss" or 0 <= m[key] <= 1)
    assert m["overlay"] == "noise" and abs(m["chance_alt"] - 11 / 32) < 1e-6


def test_audio_oracles_read_the_noise_type_and_the_digit(tiny_dir, tmp_path, monkeypatch):
    from featdrop.oracles import store

    monkeypatch.setattr(store, "STEPS", {k: 20 for k in store.STEPS})          # a few steps: the plumbing
    monkeypatch.setattr(store, "path", lambda cfg, label: tmp_path / f"{store.key(cfg, label)}.pt")
    m = train.pretrain(views="viewmaker", data_dir=str(tiny_dir), out_dir=str(tmp_path / "run"),
                       **{**TINY, "oracles": True})
    assert 0 <= m["alt_destroyed"] <= 1 and 0 <= m["main_destroyed"] <= 1
    assert m["oracle_accuracy_alt"] > 0.5   # the noise type is loud: 20 steps read it above chance (1/3)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert "alt_destroyed" in history[-1] and "main_destroyed" in history[-1]
    names = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert len(names) == 2 and all("babble+traffic+machinery" in n for n in names)


def test_pretrain_notebook_runs_with_noise_and_the_viewmaker(tiny_dir, tmp_path):
    pytest.importorskip("papermill")
    run = tmp_path / "run"
    params = dict(TINY, views="viewmaker", noise_draw="independent", data_dir=str(tiny_dir), out_dir=str(run))
    run_notebook("pretrain", tmp_path / "out.ipynb", **params)
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(math.isfinite(metrics[k]) for k in ("probe_main", "probe_alt", "knn_main", "knn_alt"))
    for fig in ("inputs", "loss_curves", "views", "probes"):
        assert (run / "figures" / f"{fig}.png").stat().st_size > 5000
    assert json.loads((run / "config.json").read_text())["noise_draw"] == "independent"
    from featdrop.probing.explorer import ViewExplorer

    ui = ViewExplorer(str(run), n_views=2, probe_n=64, index=3)
    player = ui.listen(view=1)
    assert player.data[:4] == b"RIFF" and len(player.data) > RATE  # a WAV of about a second
    # the audio figure: speech alone, the clip, two expert views; two viewmaker views with their δ
    fig, t = ui.audio_figure(), ui.data.test
    names = ("babble", "traffic", "machinery")
    assert f"digit {int(t.labels[3])} with {names[int(t.alt_labels[3])]} noise" in fig._suptitle.get_text()
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes if ax.images]
    assert titles == ["speech alone (not an input)", "clip = speech + noise", "expert view 1",
                      "expert view 2", "viewmaker view 1", "δ1 (ε 0.125)", "viewmaker view 2", "δ2 (ε 0.125)"]
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    lm = ui.data.modality.logmel
    assert np.allclose(shown[0], lm(t.base[3:4])[0, 0].numpy(), atol=1e-5)       # the speech without noise
    assert np.allclose(shown[1], ui.data.modality.clean(t.images[3:4])[0, 0].numpy(), atol=1e-5)
    assert abs(np.abs(shown[5]).mean() - 0.125) < 0.01                          # δ spends the budget ε
    assert all("reads" in ax.get_title() for ax in fig.axes if ax.images and "δ" not in ax.get_title()[:2]
               and "speech alone" not in ax.get_title())
    grid = ui.players()                                                          # JupyterLab's players
    assert [box.children[0].value for box in grid.children] == [
        "speech alone", "clip = speech + noise", "expert view 1", "expert view 2", "viewmaker view 1",
        "viewmaker view 2"]
    assert all(box.children[1].value[:4] == b"RIFF" for box in grid.children)
