"""Self-describing checkpoints: write, read (weights_only), resolve, threshold updates."""

from __future__ import annotations

import pickle

import pytest
import torch

from voxid.checkpoint import (
    load_checkpoint,
    make_meta,
    model_fingerprint,
    read_checkpoint,
    resolve_run,
    save_inference_file,
    save_threshold,
    to_plain,
)
from voxid.errors import ModelError
from voxid.models import build_model

TINY = dict(conv_channels=[4, 8, 8], gru_hidden=8, gru_layers=1, attention_channels=8,
            mlp_hidden=16, embedding_dim=8)  # fmt: skip


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("crnn", n_classes=3, **TINY).eval()


@pytest.fixture
def saved(tmp_path, model):
    meta = make_meta(model, ["ann", "bob", "cid"], data_fingerprint="abc")
    return save_inference_file(tmp_path / "run" / "model.pt", model, meta), model


def test_round_trip_gives_the_same_model(saved):
    path, model = saved
    card, loaded = load_checkpoint(path)
    x = torch.randn(2, 20, 64)
    assert torch.allclose(loaded(x), model(x))
    assert not loaded.training
    assert card.labels == ("ann", "bob", "cid")
    assert card.model.name == "crnn" and card.model.hparams["gru_hidden"] == 8
    assert card.feature_config() == model.feature_config
    assert card.sample_rate == model.feature_config.sample_rate
    assert card.mode == "identify" and card.scoring.threshold is None
    assert card.train_speakers == card.labels and card.data_fingerprint == "abc"
    assert card.fingerprint == model_fingerprint(model.state_dict())


def test_file_is_plain_for_weights_only(saved):
    path, _ = saved
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"voxid", "state_dict"}
    assert all(key.startswith("model.") for key in raw["state_dict"])
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temporary file


def test_fingerprint_follows_the_weights(model):
    state = model.state_dict()
    before = model_fingerprint(state)
    assert before == model_fingerprint({f"model.{k}": v for k, v in state.items()})
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert model_fingerprint(model.state_dict()) != before
    assert len(before) == 16


def test_resolve_run_prefers_best_then_model_then_last(tmp_path, saved):
    path, _ = saved
    run = path.parent
    assert resolve_run(run) == path
    (run / "last.ckpt").write_bytes(path.read_bytes())
    assert resolve_run(run) == path
    (run / "best.ckpt").write_bytes(path.read_bytes())
    assert resolve_run(run) == run / "best.ckpt"
    assert resolve_run(run / "last.ckpt") == run / "last.ckpt"
    with pytest.raises(ModelError, match="no checkpoint in this folder"):
        resolve_run(tmp_path)
    with pytest.raises(ModelError, match="no such checkpoint"):
        resolve_run(tmp_path / "missing.pt")


def test_save_threshold_updates_file_and_run_folder(saved):
    path, _ = saved
    run = path.parent
    best = run / "best.ckpt"
    best.write_bytes(path.read_bytes())
    written = save_threshold(run, 0.73, "p_member")
    assert sorted(p.name for p in written) == ["best.ckpt", "model.pt"]
    for file in (path, best):
        card, _ = load_checkpoint(file)
        assert card.scoring.threshold == pytest.approx(0.73)
        assert card.scoring.threshold_kind == "p_member"
    save_threshold(path, 0.4, "cosine")
    assert read_checkpoint(path)["voxid"]["threshold"] == pytest.approx(0.4)
    assert read_checkpoint(best)["voxid"]["threshold"] == pytest.approx(0.73)
    with pytest.raises(ModelError, match="finite"):
        save_threshold(path, float("nan"), "cosine")


def test_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match=r"broken\.pt"):
        load_checkpoint(bad)


def test_foreign_torch_file_is_refused(tmp_path, model):
    foreign = tmp_path / "foreign.pt"
    torch.save(model.state_dict(), foreign)  # weights without the voxid description
    with pytest.raises(ModelError, match=r"foreign\.pt: not a voxid checkpoint"):
        load_checkpoint(foreign)


class _Exploit:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.target = str(marker)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"voxid": {}, "state_dict": {}, "x": exploit}, protocol=2))
    with pytest.raises(ModelError, match=r"evil\.pt"):
        load_checkpoint(evil)
    assert not marker.exists()
    pickle.loads(evil.read_bytes())  # the file really is hostile: plain pickle runs it
    assert marker.exists()


def test_weights_that_do_not_fit_the_description(tmp_path, model):
    meta = make_meta(model, ["ann", "bob", "cid"])
    meta["hparams"]["gru_hidden"] = 12  # the description now disagrees with the weights
    path = save_inference_file(tmp_path / "model.pt", model, meta)
    with pytest.raises(ModelError, match="do not fit"):
        load_checkpoint(path)


def test_to_plain_rejects_objects():
    assert to_plain({"a": (1, 2)}) == {"a": [1, 2]}
    with pytest.raises(ModelError, match=r"meta\.bad"):
        to_plain({"bad": object()})
