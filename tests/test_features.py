"""voxid.features: agreement with librosa, shapes, batching, colour map and ONNX parity."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from conftest import tone
from voxid.errors import ConfigError
from voxid.features import (
    FeatureConfig,
    build_frontend,
    colorize,
    frames_for,
    mel_filterbank,
)

SR = 16000


@pytest.fixture(scope="module")
def voiced() -> np.ndarray:
    """2 s of a harmonic tone whose pitch glides, with a little noise."""
    rng = np.random.default_rng(1)
    t = np.arange(2 * SR) / SR
    f0 = 120 + 60 * t
    phase = 2 * np.pi * np.cumsum(f0) / SR
    wav = sum(0.3 / k * np.sin(k * phase) for k in range(1, 8))
    return (wav + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def run(cfg: FeatureConfig, wav: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return build_frontend(cfg)(torch.from_numpy(wav)[None])[0].numpy()


def test_logmel_matches_librosa(voiced):
    cfg = FeatureConfig.logmel()
    ours_db = run(cfg, voiced).T
    power = librosa.feature.melspectrogram(y=voiced, sr=SR, n_fft=2048, hop_length=512, n_mels=64)
    ref_db = librosa.power_to_db(power, ref=np.max, top_db=80.0)
    assert ours_db.shape == ref_db.shape == (64, frames_for(cfg, voiced.size))
    assert np.abs(ours_db - ref_db).max() < 0.05
    # the power itself, compared where it is not floored by top_db
    frontend = build_frontend(cfg)
    with torch.no_grad():
        ours_power = frontend.mel_power(torch.from_numpy(voiced)[None])[0].numpy().T
    strong = power > power.max() * 1e-6
    np.testing.assert_allclose(ours_power[strong], power[strong], rtol=1e-3)


def test_mel_filterbank_matches_librosa():
    ours = mel_filterbank(22050, 2048, 128, 0.0, None)
    np.testing.assert_allclose(ours, librosa.filters.mel(sr=22050, n_fft=2048, n_mels=128),
                               atol=1e-7)  # fmt: skip
    htk = mel_filterbank(SR, 512, 80, 20.0, None, htk=True, slaney_norm=False)
    ref = librosa.filters.mel(sr=SR, n_fft=512, n_mels=80, fmin=20.0, htk=True, norm=None)
    np.testing.assert_allclose(htk, ref, atol=1e-6)


def test_fbank_is_log_mel_mean_normalised(voiced):
    cfg = FeatureConfig.fbank()
    ours = run(cfg, voiced)
    power = librosa.feature.melspectrogram(
        y=voiced, sr=SR, n_fft=512, win_length=400, hop_length=160, n_mels=80, fmin=20.0,
        htk=True, norm=None,
    )  # fmt: skip
    ref = np.log(power + 1e-6).T
    ref -= ref.mean(axis=0)
    assert ours.shape == ref.shape == (frames_for(cfg, voiced.size), 80)
    np.testing.assert_allclose(ours, ref, atol=2e-3)
    np.testing.assert_allclose(ours.mean(axis=0), 0.0, atol=1e-4)


def test_fbank_norms_remove_gain_and_only_band_removes_the_channel(voiced):
    """`level` takes one mean (the gain) out, `band` each band's (the channel), `none` none."""
    raw = run(FeatureConfig.fbank(norm="none"), voiced)
    level = run(FeatureConfig.fbank(norm="level"), voiced)
    np.testing.assert_allclose(level, raw - raw.mean(), atol=1e-4)
    # a gain of 4: log power + log 16 (2.77) everywhere but where the 1e-6 floor bends the
    # log, and both normalisations take it out
    loud = 4 * voiced
    np.testing.assert_allclose(run(FeatureConfig.fbank(norm="none"), loud), raw + np.log(16),
                               atol=0.02)  # fmt: skip
    np.testing.assert_allclose(run(FeatureConfig.fbank(norm="level"), loud), level, atol=0.02)
    # a filter that colours the spectrum (first difference: a high-pass tilt) moves the
    # band means, so `level` keeps the tilt and `band` removes it
    tilted = np.append(voiced[:1], np.diff(voiced)).astype(np.float32)
    band_shift = run(FeatureConfig.fbank(norm="level"), tilted).mean(0) - level.mean(0)
    assert np.ptp(band_shift) > 3.0
    assert np.abs(run(FeatureConfig.fbank(), tilted).mean(0)).max() < 1e-4
    with pytest.raises(ConfigError, match=r"features\.norm"):
        FeatureConfig.fbank(norm="cmvn")


def test_mfcc_matches_librosa(voiced):
    cfg = FeatureConfig.mfcc()
    ours = run(cfg, voiced)
    assert ours.shape == (frames_for(cfg, voiced.size), 60)
    mel = librosa.feature.melspectrogram(y=voiced, sr=SR, n_fft=512, win_length=400,
                                         hop_length=160, n_mels=40)  # fmt: skip
    static = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=20)
    delta = librosa.feature.delta(static, width=5, mode="nearest")
    delta2 = librosa.feature.delta(delta, width=5, mode="nearest")
    ref = np.concatenate([static, delta, delta2]).T
    ref -= ref.mean(axis=0)
    np.testing.assert_allclose(ours, ref, atol=2e-2, rtol=1e-3)


def test_image_range_shape_and_orientation():
    sr = 22050
    low, high = tone(1.0, sr, freq=200.0), tone(1.0, sr, freq=2000.0)
    img = run(FeatureConfig.image(), np.concatenate([low, high]))
    assert img.shape == (200, 200) and img.min() >= 0.0 and img.max() == pytest.approx(1, abs=0.02)
    # rows are time and columns mel (low first): the bright column moves right over time
    assert img[:60].mean(axis=0).argmax() < img[-60:].mean(axis=0).argmax()
    assert run(FeatureConfig.image(image_size=400), low).shape == (400, 400)


def test_colorize_is_viridis():
    import matplotlib

    grey = torch.linspace(0, 1, 256).reshape(1, 16, 16)
    rgb = colorize(grey)
    assert rgb.shape == (1, 3, 16, 16)
    expected = np.asarray(matplotlib.colormaps["viridis"](np.arange(256)))[:, :3]
    np.testing.assert_allclose(rgb[0].reshape(3, -1).T.numpy(), expected, atol=0.5 / 255)
    assert colorize(torch.full((2, 4, 4), 7.0)).amax() <= 1.0  # clamped, not an index error


@pytest.mark.parametrize("kind", ["logmel", "fbank", "image", "mfcc", "waveform"])
def test_batches_and_frame_counts(kind):
    cfg = getattr(FeatureConfig, kind)()
    frontend = build_frontend(cfg)
    n = int(1.3 * cfg.sample_rate)
    batch = torch.from_numpy(np.stack([tone(1.3, cfg.sample_rate, freq=f) for f in (150, 300)]))
    with torch.no_grad():
        out = frontend(batch)
        single = frontend(batch[1:])
    assert out.shape[:2] == (2, frames_for(cfg, n))
    if kind != "waveform":
        assert out.shape[2] == cfg.dim
    torch.testing.assert_close(out[1:], single, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(out).all()


def test_config_round_trip_and_validation():
    for preset in ("logmel", "fbank", "image", "mfcc", "waveform"):
        cfg = getattr(FeatureConfig, preset)()
        assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert build_frontend(FeatureConfig.fbank().to_dict()).__class__.__name__ == "Fbank"
    bad = [dict(kind="cqt"), dict(n_mels=0), dict(win_length=4096), dict(f_max=9000.0),
           dict(top_db=-1.0), dict(kind="mfcc", n_mels=10, n_mfcc=20)]  # fmt: skip
    for kwargs in bad:
        with pytest.raises(ConfigError, match="features"):
            FeatureConfig(**kwargs)
    with pytest.raises(ConfigError, match="unknown keys"):
        FeatureConfig.from_dict({"kind": "fbank", "nmels": 80})


def _onnx_parity(cfg: FeatureConfig, tmp_path) -> None:
    import onnxruntime as ort

    frontend = build_frontend(cfg).eval()
    example = torch.from_numpy(np.stack([tone(1.0, cfg.sample_rate, freq=f) for f in (120, 240)]))
    path = tmp_path / f"{cfg.kind}.onnx"
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("samples", min=cfg.n_fft)}
    torch.onnx.export(frontend, (example,), str(path), input_names=["waveform"],
                      output_names=["features"], opset_version=18, dynamo=True,
                      dynamic_shapes=(dims,))  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = torch.from_numpy(np.stack([tone(1.7, cfg.sample_rate, freq=f, seed=f)
                                       for f in (90, 180, 360)]))  # fmt: skip
    for wav in (example, other):
        got = session.run(None, {"waveform": wav.numpy()})[0]
        with torch.no_grad():
            want = frontend(wav).numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-3


def test_onnx_parity_fbank(tmp_path):
    _onnx_parity(FeatureConfig.fbank(), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["logmel", "image", "mfcc"])
def test_onnx_parity_other_kinds(tmp_path, kind):
    _onnx_parity(getattr(FeatureConfig, kind)(), tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("kind", ["logmel", "fbank", "image", "mfcc"])
def test_gpu_matches_cpu(kind):
    cfg = getattr(FeatureConfig, kind)()
    frontend = build_frontend(cfg)
    wav = torch.from_numpy(np.stack([tone(1.0, cfg.sample_rate, freq=f) for f in (120, 240)]))
    with torch.no_grad():
        cpu = frontend(wav)
        gpu = frontend.to("cuda")(wav.to("cuda")).cpu()
    torch.testing.assert_close(gpu, cpu, atol=2e-3, rtol=1e-3)
    if kind == "image":
        assert colorize(gpu.to("cuda")).device.type == "cuda"
