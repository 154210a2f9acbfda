"""Speaker model architectures: shapes, gradients, parameter counts, heads, MC dropout,
rebuilding from hparams, overfitting one batch and ONNX export."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from voxid.errors import ConfigError, ModelError
from voxid.features import FeatureConfig
from voxid.models import AAMSoftmax, build_model, count_parameters, default_feature_config
from voxid.models.layers import AttentiveStatsPool, StatsPool

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "seed_cnn": {},
    "crnn": dict(
        conv_channels=(4, 8, 8),
        gru_hidden=16,
        attention_channels=8,
        mlp_hidden=32,
        embedding_dim=16,
    ),
    "ecapa": dict(
        channels=16,
        mfa_channels=48,
        res2net_scale=4,
        se_channels=8,
        attention_channels=8,
        embedding_dim=16,
    ),
    "resnet34": dict(base_channels=4, blocks=(1, 1, 1, 1), embedding_dim=16),
}


def tiny(name: str, n_classes: int = 4):
    cfg = FeatureConfig.image(image_size=32) if name == "seed_cnn" else None
    return build_model(name, n_classes, cfg, **TINY[name])


def features_for(model, batch: int = 3, frames: int = 24, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    cfg = model.feature_config
    if cfg.kind == "image":
        return torch.rand(batch, cfg.image_size, cfg.image_size, generator=gen)
    return torch.randn(batch, frames, cfg.dim, generator=gen)


@pytest.mark.parametrize("name", list(TINY))
def test_forward_backward_shapes(name):
    torch.manual_seed(0)
    model = tiny(name).train()
    x, y = features_for(model), torch.tensor([0, 3, 1])
    logits = model(x, labels=y)
    assert logits.shape == (3, 4)
    F.cross_entropy(logits, y).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    emb = model.embed(x)
    assert emb.shape == (3, model.embedding_dim)
    if model.is_embedding_model:
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


def test_embed_waveform_runs_the_frontend():
    model = tiny("ecapa").eval()
    wav = torch.randn(2, 8000)
    with torch.no_grad():
        torch.testing.assert_close(model.embed_waveform(wav), model.embed(model.frontend(wav)))
        assert model.embed_waveform(wav[0]).shape == (1, 16)


def test_seed_cnn_matches_the_paper_parameter_count():
    model = build_model("seed_cnn", 10)
    assert not model.is_embedding_model
    assert count_parameters(model) == 2_196_138
    assert model.encoder.dense[1].in_features == 33_856  # the paper's flatten size
    # The 400 x 400 variant the paper's text mentions: 64 * 48 * 48 after three stages.
    big = build_model("seed_cnn", 10, FeatureConfig.image(image_size=400))
    assert big.encoder.dense[1].in_features == 64 * 48 * 48
    grey = torch.rand(1, 200, 200)
    with torch.no_grad():
        from voxid.features import colorize

        torch.testing.assert_close(model.eval()(grey), model(colorize(grey)))


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("ecapa", 6.0e6, 6.4e6), ("resnet34", 6.4e6, 6.8e6), ("crnn", 3.5e6, 4.5e6)],
)
def test_full_size_parameter_counts(name, low, high):
    # ecapa: 6,195,712 and resnet34: 6,636,896 with 10 classes (encoders as in WeSpeaker's
    # ECAPA_TDNN_c512 and ResNet34); crnn: 4,041,820.
    assert low < count_parameters(build_model(name, 10)) < high


def test_aam_softmax_lowers_only_the_target_logit_by_the_margin():
    torch.manual_seed(0)
    s, m = 30.0, 0.2
    head = AAMSoftmax(8, 5, margin=m, scale=s)
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    cosine = F.normalize(emb) @ F.normalize(head.weight).T
    plain = head(emb)
    torch.testing.assert_close(plain, s * cosine)
    margin = head(emb, labels)
    target = F.one_hot(labels, 5).bool()
    theta = torch.acos(cosine[target])
    assert (theta + m < math.pi).all()  # the plain branch, not the fallback
    torch.testing.assert_close(
        plain[target] - margin[target], s * (torch.cos(theta) - torch.cos(theta + m))
    )
    torch.testing.assert_close(margin[~target], plain[~target])


def test_aam_softmax_keeps_falling_past_pi_minus_m():
    head = AAMSoftmax(2, 2, margin=0.5, scale=1.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    angle = torch.tensor(math.pi - 0.2)  # theta + m > pi
    emb = torch.stack([torch.cos(angle), torch.sin(angle)]).unsqueeze(0)
    logit = head(emb, torch.tensor([0]))[0, 0]
    expected = math.cos(angle) - math.sin(math.pi - 0.5) * 0.5
    assert logit.item() == pytest.approx(expected, abs=1e-5)


def test_mc_dropout_samples_in_eval_and_plain_eval_is_deterministic():
    torch.manual_seed(0)
    model = tiny("crnn").eval()
    x = features_for(model)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), model.embed(x), rtol=0, atol=0)
        model.set_mc_dropout(True)
        model.eval()  # a later eval() must not switch MC dropout off
        assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        a, b = model.embed(x), model.embed(x)
        assert not torch.allclose(a, b)
        model.set_mc_dropout(False)
        torch.testing.assert_close(model.embed(x), model.embed(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(TINY))
def test_rebuild_from_hparams_loads_the_state_dict(name, tmp_path):
    torch.manual_seed(1)
    model = tiny(name).eval()
    path = tmp_path / "m.pt"
    torch.save(
        {"name": model.name, "hparams": model.hparams, "features": model.feature_config.to_dict(),
         "n_classes": model.n_classes, "state_dict": model.state_dict()},
        path,
    )  # fmt: skip
    saved = torch.load(path, weights_only=True)
    clone = build_model(saved["name"], saved["n_classes"], saved["features"], **saved["hparams"])
    clone.load_state_dict(saved["state_dict"], strict=True)
    clone.eval()
    x = features_for(model)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)


def test_masked_pooling_ignores_padding():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 20)
    padded = x.clone()
    padded[0, :, 12:] = 100.0  # garbage in the padding
    lengths = torch.tensor([12, 20])
    for pool in (StatsPool(), AttentiveStatsPool(6, 4, global_context=True)):
        out = pool(padded, lengths)
        torch.testing.assert_close(out[0], pool(x[:1, :, :12])[0])
        torch.testing.assert_close(out[1], pool(x[1:])[0])


def test_global_context_attention_equals_the_papers_concatenation():
    """Projecting the utterance statistics once equals convolving them at every frame."""
    torch.manual_seed(0)
    pool = AttentiveStatsPool(6, 4, global_context=True)
    x, steps = torch.randn(2, 6, 15), 15
    mean, std = x.mean(-1, keepdim=True), x.std(-1, unbiased=False, keepdim=True)
    stacked = torch.cat([x, mean.expand(-1, -1, steps), std.expand(-1, -1, steps)], dim=1)
    weights = torch.softmax(pool.attention(stacked), dim=-1)
    mean_w = (x * weights).sum(-1)
    std_w = ((x - mean_w[..., None]) ** 2 * weights).sum(-1).sqrt()
    torch.testing.assert_close(pool(x), torch.cat([mean_w, std_w], dim=1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["crnn", "ecapa"])
def test_padded_batch_embeds_each_item_as_alone(name):
    torch.manual_seed(0)
    model = tiny(name).eval()
    short = torch.randn(1, 19, model.feature_config.dim)
    full = torch.randn(1, 32, model.feature_config.dim)
    batch = torch.cat([full, F.pad(short, (0, 0, 0, 13), value=7.0)])  # garbage padding
    with torch.no_grad():
        padded = model.embed(batch, torch.tensor([32, 19]))
        torch.testing.assert_close(padded[1], model.embed(short)[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(padded[0], model.embed(full)[0], atol=1e-5, rtol=1e-4)


def test_crnn_mean_norm_ignores_a_fixed_channel_and_padding():
    from voxid.features import FeatureConfig

    torch.manual_seed(0)
    model = build_model("crnn", 4, FeatureConfig.logmel(), **TINY["crnn"], mean_norm=True).eval()
    x = torch.randn(1, 30, 64)
    tilt = torch.linspace(-6.0, 6.0, 64)  # a microphone's colouring: an offset per band
    padded = torch.cat([x, torch.full((1, 10, 64), 9.0)], dim=1)
    with torch.no_grad():
        ref = model.embed(x)
        torch.testing.assert_close(model.embed(x + tilt), ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.embed(padded, torch.tensor([30])), ref,
                                   atol=1e-5, rtol=1e-4)  # fmt: skip
        plain = build_model("crnn", 4, FeatureConfig.logmel(), **TINY["crnn"]).eval()
        assert not torch.allclose(plain.embed(x + tilt), plain.embed(x), atol=1e-3)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = tiny("ecapa")
    x = torch.randn(8, 20, 80)
    y = torch.arange(8) % 4
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x, labels=y), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy == 1.0


@pytest.mark.parametrize("name", ["crnn", "ecapa"])
def test_onnx_encoder_export_matches_torch_with_dynamic_axes(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = tiny(name).eval()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.encoder, (features_for(model, 2, 30),), str(path), input_names=["features"],
            output_names=["embedding"], dynamo=False, opset_version=17,
            dynamic_axes={"features": {0: "batch", 1: "time"}, "embedding": {0: "batch"}},
        )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, frames in ((2, 30), (3, 57), (1, 11)):
        x = features_for(model, batch, frames, seed=batch)
        onnx_emb = session.run(None, {"features": x.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(onnx_emb, model.encoder(x).numpy(), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["crnn", "ecapa"])
def test_onnx_dynamo_export_of_frontend_and_encoder(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = tiny(name).eval()
    path = tmp_path / f"{name}.onnx"
    samples = torch.export.Dim("samples", min=4000, max=16000 * 600)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.export_module(),
            (torch.randn(2, 16000),),
            str(path),
            input_names=["waveform"],
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch"), 1: samples},),
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, n in ((2, 16000), (3, 24100), (1, 9000)):
        wav = torch.randn(batch, n)
        onnx_emb = session.run(None, {"waveform": wav.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(onnx_emb, model.embed_waveform(wav).numpy(), atol=1e-4)


def test_bad_parameters_raise_config_errors():
    with pytest.raises(ConfigError, match="model='xvector'"):
        build_model("xvector", 4)
    with pytest.raises(ConfigError, match="n_classes"):
        build_model("ecapa", -1)  # 0 is an encoder without classes (a shipped model)
    with pytest.raises(ConfigError, match="gru_size"):
        build_model("crnn", 4, gru_size=8)
    with pytest.raises(ConfigError, match="channels=0"):
        build_model("ecapa", 4, channels=0)
    with pytest.raises(ConfigError, match="res2net_scale=3"):
        build_model("ecapa", 4, channels=16, res2net_scale=3)
    with pytest.raises(ConfigError, match=r"dropout=1\.5"):
        build_model("crnn", 4, dropout=1.5)
    with pytest.raises(ConfigError, match="margin"):
        build_model("ecapa", 4, channels=16, margin=-0.1)
    with pytest.raises(ConfigError, match="image_size"):
        build_model("seed_cnn", 4, image_size=400)  # disagrees with the 200 px features


def test_wrong_feature_size_is_a_model_error():
    model = tiny("ecapa")
    with pytest.raises(ModelError, match="expects 80"):
        model(torch.randn(2, 20, 64))


def test_default_feature_configs():
    kinds = {n: default_feature_config(n).kind for n in ("seed_cnn", "crnn", "ecapa", "gmm")}
    assert kinds == {"seed_cnn": "image", "crnn": "logmel", "ecapa": "fbank", "gmm": "mfcc"}
    assert build_model("crnn", 2, **TINY["crnn"]).feature_config.n_mels == 64


def test_lda_projection_keeps_speaker_directions_and_drops_session_ones():
    """Speakers differ along 2 of 12 dims; a strong per-utterance 'session' spread lies along
    others. Cosine verification on raw vectors confuses speakers, after LDA it does not."""
    from voxid.metrics import eer
    from voxid.models.projection import fit_lda

    rng = np.random.default_rng(0)
    n_spk, per, dim = 8, 30, 12

    def utterances(seed_means, n):
        labels = np.repeat(np.arange(len(seed_means)), n)
        session = np.zeros((labels.size, dim))
        session[:, 2:] = rng.normal(0, 1.0, (labels.size, dim - 2))
        x = seed_means[labels] + session + rng.normal(0, 0.05, (labels.size, dim))
        return F.normalize(torch.from_numpy(x), dim=1).numpy(), labels

    def means(n):
        m = np.zeros((n, dim))
        m[:, 0], m[:, 1] = np.cos(np.linspace(0, 2 * np.pi, n, endpoint=False)) * 3, np.sin(
            np.linspace(0, 2 * np.pi, n, endpoint=False)) * 3 + 4  # fmt: skip
        return m

    x, y = utterances(means(n_spk), per)
    proj = fit_lda(x, y)
    assert proj.out_dim == n_spk - 1 and proj.mean.shape == (dim,)
    # unseen speakers of the same kind: enrol with the mean of 5, score the rest
    tx, ty = utterances(means(6) * 1.1 + 0.3, 20)

    def trial_eer(emb):
        emb = F.normalize(torch.as_tensor(emb, dtype=torch.float64), dim=1).numpy()
        cents = np.stack([emb[ty == s][:5].mean(0) for s in range(6)])
        cents /= np.linalg.norm(cents, axis=1, keepdims=True)
        test = np.concatenate([np.flatnonzero(ty == s)[5:] for s in range(6)])
        scores = emb[test] @ cents.T
        target = ty[test][:, None] == np.arange(6)[None]
        return eer(scores[target], scores[~target])[0]

    with torch.no_grad():
        projected = proj(torch.from_numpy(tx).float()).numpy()
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)
    raw, lda = trial_eer(tx), trial_eer(projected)
    assert raw > 0.15 and lda < raw / 3, (raw, lda)


def test_lda_projection_travels_with_the_model(tmp_path):
    from voxid.checkpoint import load_checkpoint, make_meta, save_inference_file
    from voxid.models.projection import LdaProjection, fit_lda

    torch.manual_seed(0)
    model = tiny("ecapa", n_classes=5).eval()
    x = features_for(model, batch=4)
    with torch.no_grad():
        plain = model.embed(x)
        proj = LdaProjection(16, 3)
        proj.weight.copy_(torch.randn(16, 3))
        proj.mean.copy_(torch.randn(16) * 0.1)
        model.set_projection(proj)
        projected = model.embed(x)
        bank = model.class_bank()
    assert projected.shape == (4, 3) and model.embedding_dim == 3 and bank.shape == (5, 3)
    torch.testing.assert_close(projected, proj(plain))
    path = tmp_path / "model.pt"
    save_inference_file(path, model, make_meta(model, list("abcde")))
    card, clone = load_checkpoint(path)
    assert card.model.hparams["projection_dim"] == 3 and card.model.embedding_dim == 3
    with torch.no_grad():
        torch.testing.assert_close(clone.embed(x), projected, rtol=0, atol=0)
    model.set_projection(None)
    assert model.embedding_dim == 16 and "projection_dim" not in model.hparams
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), plain)
    with pytest.raises(ModelError, match="no projection"):
        tiny("seed_cnn").set_projection(proj)
    from voxid.errors import DataError

    with pytest.raises(DataError, match="at least 3 speakers"):
        fit_lda(np.eye(4), np.array([0, 0, 1, 1]))
    with pytest.raises(DataError, match=r"dim must be in 1\.\.2"):
        fit_lda(np.random.default_rng(0).normal(size=(9, 4)), np.repeat([0, 1, 2], 3), dim=3)
