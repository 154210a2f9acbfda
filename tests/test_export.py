"""ONNX export: torch/ONNX parity, self-describing metadata, int8, bad files."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from test_recognizer import TRAIN_LABELS, make_model
from voxid.errors import ModelError, RegistryError
from voxid.inference.export import META_KEY, OnnxBackend, export_onnx
from voxid.inference.recognizer import Recognizer


@pytest.fixture(scope="module", params=["crnn", "ecapa"])
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    model = make_model(
        root / "model.pt", request.param, threshold=0.37, threshold_kind="cosine:eer"
    )
    report = export_onnx(model, root / "model.onnx")
    return model, root / "model.onnx", report


def test_parity_with_torch(exported, speech_corpus):
    model, onnx_path, report = exported
    assert report.max_abs_diff <= 1e-4 and report.opset >= 17
    torch_rec, onnx_rec = Recognizer.load(model, None), Recognizer.load(onnx_path, None)
    assert onnx_rec.backend.kind == "onnx"
    files = sorted(speech_corpus.glob("*/*.wav"))[::5]
    a = torch_rec.embed_many(files, batch_size=16)
    b = onnx_rec.embed_many(files, batch_size=16)
    assert np.abs(a - b).max() <= 1e-4
    # dynamic batch and time axes: other shapes than the export example
    wav = (torch.randn(5, 12345, generator=torch.Generator().manual_seed(1)) * 0.1).numpy()
    np.testing.assert_allclose(onnx_rec.backend.embed(wav), torch_rec.backend.embed(wav), atol=1e-4)


def test_file_describes_itself(exported, speech_wav):
    model, onnx_path, _ = exported
    torch_rec, onnx_rec = Recognizer.load(model, None), Recognizer.load(onnx_path, None)
    props = ort.InferenceSession(str(onnx_path)).get_modelmeta().custom_metadata_map
    meta = json.loads(props[META_KEY])
    assert meta["labels"] == TRAIN_LABELS and meta["threshold"] == 0.37
    assert meta["feature_config"] == torch_rec.card.feature_dict
    # The same card but for what the export adds.
    assert dataclasses.replace(onnx_rec.card, onnx=None) == torch_rec.card
    assert onnx_rec.threshold == 0.37
    assert onnx_rec.model_fingerprint == torch_rec.model_fingerprint
    np.testing.assert_allclose(
        onnx_rec.backend.class_weights, torch_rec.backend.class_weights, atol=1e-7
    )
    # a training speaker is verified against the AAM bank with the same score in both
    v_t = torch_rec.verify("tr_c", speech_wav, include_training=True)
    v_o = onnx_rec.verify("tr_c", speech_wav, include_training=True)
    assert v_o.source == "training" and abs(v_t.score - v_o.score) < 1e-4
    assert [s.name for s in onnx_rec.speakers(include_training=True)] == TRAIN_LABELS


def test_registry_shared_between_torch_and_onnx(exported, speech_corpus, tmp_path):
    model, onnx_path, _ = exported
    files = sorted((speech_corpus / "alice").glob("*.wav"))
    Recognizer.load(model, tmp_path / "s.db").enroll("alice", files[:2])
    onnx_rec = Recognizer.load(onnx_path, tmp_path / "s.db")
    assert onnx_rec.verify("alice", files[3]).source == "enrolled"
    with pytest.raises(ModelError, match="torch backend"):
        Recognizer.load(onnx_path, None, mc_samples=3)


@pytest.mark.slow
def test_int8(tmp_path, speech_corpus):
    model = make_model(tmp_path / "model.pt", "ecapa")
    fp32 = export_onnx(model, tmp_path / "fp32.onnx")
    int8 = export_onnx(model, tmp_path / "int8.onnx", int8=True)
    assert int8.precision == "int8" and int8.min_cosine > 0.99
    assert int8.size_mb <= fp32.size_mb
    # the front-end (STFT, mel matrix) stays fp32: int8 export finds it by its node names
    import onnx

    nodes = onnx.load(str(tmp_path / "int8.onnx")).graph.node
    front = [n for n in nodes if n.name.startswith("/frontend/")]
    assert front and not any("Integer" in n.op_type or "Quant" in n.op_type for n in front)
    assert any("Integer" in n.op_type for n in nodes if n.name.startswith("/encoder/"))
    a, b = (
        Recognizer.load(tmp_path / "fp32.onnx", None),
        Recognizer.load(tmp_path / "int8.onnx", None),
    )
    files = sorted(speech_corpus.glob("*/*.wav"))[::4]
    ea, eb = a.embed_many(files), b.embed_many(files)
    assert np.min(np.sum(ea * eb, axis=1)) > 0.99
    assert b.model_fingerprint == a.model_fingerprint + "-int8"
    a_reg = Recognizer.load(tmp_path / "fp32.onnx", tmp_path / "s.db")
    a_reg.enroll("alice", files[0])
    with pytest.raises(RegistryError, match="-int8"):
        Recognizer.load(tmp_path / "int8.onnx", tmp_path / "s.db").enroll("bob", files[1])


def test_bad_onnx_files(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ModelError, match=r"junk.onnx: not a readable ONNX model"):
        OnnxBackend(junk)
    with pytest.raises(ModelError, match="no such ONNX file"):
        OnnxBackend(tmp_path / "missing.onnx")
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.randn(1, 4),), str(plain), dynamo=False)
    with pytest.raises(ModelError, match=r"plain.onnx: not a voxid ONNX export"):
        Recognizer.load(plain, None)
