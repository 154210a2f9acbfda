"""voxid.augment: each augmentation does what it claims, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import tone
from voxid.audio import load_audio
from voxid.augment import (
    NOISE_INTENSITIES,
    OFFLINE_AUGMENTATIONS,
    NoiseBank,
    SpecAugment,
    add_gaussian_noise,
    speed_perturb,
    vtlp,
)
from voxid.errors import ConfigError, DataError

SR = 16000


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return float(10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2)))


def peak_hz(wav: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(wav.size)))
    return float(np.fft.rfftfreq(wav.size, 1 / sr)[spectrum.argmax()])


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory):
    """Two real-format noise recordings: hum and filtered noise, at 22.05 kHz and 16 kHz."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(3)
    hum = 0.2 * np.sin(2 * np.pi * 50 * np.arange(22050) / 22050) + 0.05 * rng.standard_normal(
        22050
    )
    sf.write(root / "hum.wav", hum.astype(np.float32), 22050)
    (root / "sub").mkdir()
    hiss = np.convolve(rng.standard_normal(3 * SR), np.ones(8) / 8, mode="same")
    sf.write(root / "sub" / "hiss.flac", hiss.astype(np.float32), SR)
    (root / "readme.txt").write_text("not audio")
    return root


@pytest.mark.parametrize("target", [NOISE_INTENSITIES["low"], NOISE_INTENSITIES["high"], 0.0])
def test_gaussian_noise_snr(target):
    clean = tone(2.0, SR)
    noisy = add_gaussian_noise(clean, target, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    assert abs(snr_db(clean, noisy) - target) < 0.5
    np.testing.assert_array_equal(
        noisy, add_gaussian_noise(clean, target, np.random.default_rng(0))
    )
    assert not np.array_equal(noisy, add_gaussian_noise(clean, target, np.random.default_rng(1)))


def test_noise_bank_mix(noise_dir):
    bank = NoiseBank(noise_dir)
    assert [p.name for p in bank.files] == ["hum.wav", "hiss.flac"]
    clean = tone(4.0, SR)  # longer than the hum: the recording is looped
    snrs = [snr_db(clean, bank.mix(clean, (5.0, 15.0), np.random.default_rng(s), sr=SR))
            for s in range(8)]  # fmt: skip
    assert all(4.5 <= v <= 15.5 for v in snrs) and max(snrs) - min(snrs) > 2.0
    fixed = bank.mix(clean, (10.0, 10.0), np.random.default_rng(0), sr=SR)
    assert abs(snr_db(clean, fixed) - 10.0) < 0.5
    np.testing.assert_array_equal(fixed, bank.mix(clean, (10.0, 10.0), np.random.default_rng(0)))


def test_noise_bank_on_real_noise(shared_data):
    bank = NoiseBank(shared_data / "noise")
    clean = load_audio(sorted((shared_data / "asc30").glob("*/*.flac"))[0], sr=SR)
    noisy = bank.mix(clean, (10.0, 10.0), np.random.default_rng(0), sr=SR)
    assert abs(snr_db(clean, noisy) - 10.0) < 0.5


def test_noise_bank_errors(tmp_path):
    with pytest.raises(DataError, match="noise folder not found"):
        NoiseBank(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no audio files"):
        NoiseBank(tmp_path)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_duration_and_pitch(factor):
    clean = tone(2.0, SR, freq=300.0)
    fast = speed_perturb(clean, SR, factor)
    assert fast.size == pytest.approx(clean.size / factor, abs=1)
    assert peak_hz(fast, SR) == pytest.approx(300 * factor, abs=2)


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_vtlp_warps_frequencies(alpha):
    t = np.arange(SR) / SR
    wav = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = vtlp(wav, SR, alpha)
    assert out.shape == wav.shape
    assert peak_hz(out, SR) == pytest.approx(1000 * alpha, abs=3)
    assert np.mean(out**2) == pytest.approx(np.mean(wav**2), rel=0.1)


def test_vtlp_identity_at_one():
    wav = tone(1.0, SR)
    np.testing.assert_allclose(vtlp(wav, SR, 1.0), wav, atol=1e-4)


def test_offline_augmentations(noise_dir):
    factors = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35, 1.4)
    warps = {f"{kind}_{f:g}" for kind in ("speed", "vtlp") for f in factors}
    assert set(OFFLINE_AUGMENTATIONS) == {"noise_low", "noise_high", "noise_real", "vtlp"} | warps
    clean = tone(1.0, SR)
    for name, fn in OFFLINE_AUGMENTATIONS.items():
        out = fn(clean, SR, np.random.default_rng(7), noise_bank=noise_dir)
        again = fn(clean, SR, np.random.default_rng(7), noise_bank=NoiseBank(noise_dir))
        assert out.dtype == np.float32 and np.isfinite(out).all(), name
        np.testing.assert_array_equal(out, again, err_msg=name)
        assert not np.array_equal(out[: clean.size], clean), name
    assert abs(snr_db(clean, OFFLINE_AUGMENTATIONS["noise_high"](clean, SR, 0)) - 5.0) < 0.5
    with pytest.raises(ConfigError, match="noise_real"):
        OFFLINE_AUGMENTATIONS["noise_real"](clean, SR, np.random.default_rng(0))


def test_specaugment_widths_and_reproducibility():
    aug = SpecAugment(freq_mask=6, time_mask=9, n_freq=1, n_time=1).train()
    x = torch.randn(32, 50, 40, generator=torch.Generator().manual_seed(0)) + 5.0
    # a cell equal to its item's mean would look unmasked (a flake at ~4 % unseeded)
    assert (x != x.mean(dim=(1, 2), keepdim=True)).all()
    widths_f, widths_t = [], []
    for seed in range(20):
        out = aug(x, generator=torch.Generator().manual_seed(seed))
        changed = out != x
        assert torch.equal(out, aug(x, generator=torch.Generator().manual_seed(seed)))
        for i in range(x.shape[0]):
            cols = changed[i].all(dim=0).nonzero().flatten()
            rows = changed[i].all(dim=1).nonzero().flatten()
            for idx, widths in ((cols, widths_f), (rows, widths_t)):
                if idx.numel():  # one band each: contiguous
                    assert int(idx[-1] - idx[0]) + 1 == idx.numel()
                widths.append(idx.numel())
            # masked cells take the item's mean
            assert torch.allclose(out[i][changed[i]], x[i].mean().expand(int(changed[i].sum())))
    assert max(widths_f) == 6 and min(widths_f) == 0
    assert max(widths_t) == 9 and min(widths_t) == 0
    assert torch.equal(aug.eval()(x), x)


def test_bad_parameters():
    with pytest.raises(ConfigError, match="factor"):
        speed_perturb(tone(0.1, SR), SR, 3.0)
    with pytest.raises(ConfigError, match="alpha"):
        vtlp(tone(0.1, SR), SR, 2.0)
    with pytest.raises(ConfigError, match="snr_db"):
        add_gaussian_noise(tone(0.1, SR), float("nan"), np.random.default_rng(0))
    with pytest.raises(DataError, match="all zeros"):
        add_gaussian_noise(np.zeros(100, np.float32), 10.0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="freq_mask"):
        SpecAugment(freq_mask=-1)


def test_training_mixes_real_noise_into_waveforms_at_the_snr(tmp_path):
    from voxid.config import TrainConfig
    from voxid.features import FeatureConfig
    from voxid.models import build_model
    from voxid.training.batch import InputPipeline

    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    rng = np.random.default_rng(0)
    sf.write(noise_dir / "hum.wav", 0.1 * rng.standard_normal(8000).astype(np.float32), 16000)
    cfg = TrainConfig(model="crnn")
    cfg.augment.real_noise_dir, cfg.augment.real_noise_prob = str(noise_dir), 1.0
    cfg.augment.real_noise_snr = [10.0, 10.0]
    tiny = {"conv_channels": (4, 8, 8), "gru_hidden": 8, "attention_channels": 8,
            "mlp_hidden": 8, "embedding_dim": 8}  # fmt: skip
    model = build_model("crnn", 2, FeatureConfig.logmel(), **tiny)
    pipe = InputPipeline(model, cfg, waveform=True)
    clean = torch.from_numpy(np.stack([tone(1.0, seed=1), tone(1.0, freq=300, seed=2)]))
    lengths = torch.tensor([16000, 12000])
    noisy = pipe._mix_real_noise(clean, lengths)
    for i, n in enumerate(lengths.tolist()):
        added = (noisy[i, :n] - clean[i, :n]).numpy()
        snr = 10 * np.log10(np.mean(clean[i, :n].numpy() ** 2) / np.mean(added**2))
        assert abs(snr - 10.0) < 0.1
    assert torch.equal(noisy[1, 12000:], clean[1, 12000:])  # padding stays untouched
    feats, _ = pipe(clean, lengths, train=False)  # validation and test stay clean
    torch.testing.assert_close(feats, pipe(clean, lengths, train=False)[0])
    with pytest.raises(ConfigError, match=r"augment\.real_noise_dir: .*waveform store"):
        InputPipeline(model, cfg, waveform=False)


def _band_power(wav: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(wav)) ** 2
    freqs = np.fft.rfftfreq(wav.size, 1 / SR)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


def test_narrowband_removes_the_band_above_the_cutoff_of_a_share_of_the_batch():
    from voxid.training.batch import narrowband

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((64, SR)).astype(np.float32))
    torch.manual_seed(0)
    y = narrowband(x, SR, (3400.0, 4000.0), 0.5).numpy()
    cut = [i for i in range(64) if not np.array_equal(y[i], x[i].numpy())]
    assert 20 <= len(cut) <= 44  # about half of the batch
    for i in cut:
        above, below = _band_power(y[i], 4000, 8000), _band_power(y[i], 100, 3000)
        assert above < 1e-6 * below  # nothing left above the highest cutoff
        assert below == pytest.approx(_band_power(x[i].numpy(), 100, 3000), rel=1e-3)
    assert torch.equal(narrowband(x, SR, (3400.0, 4000.0), 0.0), x)


def test_training_band_limits_waveforms_when_asked_and_keeps_the_padding_zero():
    from voxid.config import TrainConfig
    from voxid.features import FeatureConfig
    from voxid.models import build_model
    from voxid.training.batch import InputPipeline

    cfg = TrainConfig(model="crnn")
    cfg.augment.narrowband_prob = 1.0
    tiny = {"conv_channels": (4, 8, 8), "gru_hidden": 8, "attention_channels": 8,
            "mlp_hidden": 8, "embedding_dim": 8}  # fmt: skip
    model = build_model("crnn", 2, FeatureConfig.logmel(), **tiny)
    seen = []
    model.frontend.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    pipe = InputPipeline(model, cfg, waveform=True)
    wide = torch.from_numpy(np.stack([tone(1.0, freq=6000, seed=1), tone(1.0, freq=300)]))
    wide[1, 12000:] = 0.0
    pipe(wide, torch.tensor([16000, 12000]), train=True)
    band = seen[-1].numpy()
    assert _band_power(band[0], 4000, 8000) < 1e-6 * _band_power(wide[0].numpy(), 4000, 8000)
    assert np.all(band[1, 12000:] == 0.0)
    pipe(wide, torch.tensor([16000, 12000]), train=False)  # validation stays wideband
    assert torch.equal(seen[-1], wide)


@pytest.mark.parametrize("band", [[0.0, 4000.0], [4000.0, 3000.0], [3000.0], "4k"])
def test_bad_narrowband_cutoffs_are_refused(band):
    from voxid.config import TrainConfig

    cfg = TrainConfig(model="crnn")
    cfg.augment.narrowband_hz = band
    with pytest.raises(ConfigError, match=r"augment\.narrowband_hz"):
        cfg.validate()
