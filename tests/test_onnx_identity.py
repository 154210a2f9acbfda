"""An ONNX file's model identity comes from its weights, and its metadata is checked before
use (issue #15, item 7): hand-edited fingerprints and crafted metadata are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from test_recognizer import TRAIN_LABELS, make_model
from voxid.errors import ModelError
from voxid.inference.backends import TorchBackend
from voxid.inference.export import META_KEY, WEIGHTS_KEY, OnnxBackend, export_onnx
from voxid.inference.recognizer import Recognizer


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("identity")
    a = make_model(root / "a.pt", "crnn", seed=0)
    b = make_model(root / "b.pt", "crnn", seed=1)
    export_onnx(a, root / "a.onnx", check_seconds=1.0)
    return {"a.pt": a, "b.pt": b, "a.onnx": root / "a.onnx"}


def _rewrite(src: Path, dst: Path, meta=None, props=None, graph=None) -> Path:
    """A copy of an ONNX file with its voxid metadata, other metadata or graph edited."""
    proto = onnx.load(str(src))
    entries = {p.key: p.value for p in proto.metadata_props}
    if meta is not None:
        entries[META_KEY] = json.dumps(meta(json.loads(entries[META_KEY])))
    if props is not None:
        props(entries)
    if graph is not None:
        graph(proto.graph)
    del proto.metadata_props[:]
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(dst))
    return dst


def _refused(path: Path, *words: str) -> str:
    with pytest.raises(ModelError) as info:
        OnnxBackend(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    for word in words:
        assert word in message, message
    return message


def test_export_keeps_the_torch_fingerprint(files):
    onnx_backend, torch_backend = OnnxBackend(files["a.onnx"]), TorchBackend(files["a.pt"])
    assert onnx_backend.fingerprint == torch_backend.fingerprint
    assert onnx_backend.card.onnx is not None
    assert len(onnx_backend.card.onnx.weights_sha256 or "") == 64


def test_a_hand_edited_fingerprint_is_refused(files, tmp_path, speech_corpus):
    wavs = sorted((speech_corpus / "alice").glob("*.wav"))
    registry = tmp_path / "speakers.db"
    Recognizer.load(files["b.pt"], registry).enroll("alice", wavs[:2])
    other = TorchBackend(files["b.pt"]).fingerprint
    # Model a, claiming to be model b so as to pass the registry's check.
    forged = _rewrite(files["a.onnx"], tmp_path / "forged.onnx",
                      meta=lambda m: {**m, "model_fingerprint": other})  # fmt: skip
    _refused(forged, "metadata does not match the weights", "model_fingerprint")
    with pytest.raises(ModelError, match="does not match the weights"):
        Recognizer.load(forged, registry).verify("alice", wavs[3])


def test_other_weights_under_the_same_metadata_are_refused(files, tmp_path):
    def nudge(graph):
        init = max(graph.initializer, key=lambda t: np.prod(t.dims))
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 1e-3, init.name))

    swapped = _rewrite(files["a.onnx"], tmp_path / "swapped.onnx", graph=nudge)
    _refused(swapped, "does not match the weights")


def test_an_edited_class_bank_is_refused(files, tmp_path):
    from voxid.inference.export import _decode_array, _encode_array

    def flip(entries):
        entries[WEIGHTS_KEY] = _encode_array(-_decode_array(entries[WEIGHTS_KEY], "bank"))

    _refused(_rewrite(files["a.onnx"], tmp_path / "bank.onnx", props=flip), "does not match")


def test_an_older_export_gets_its_fingerprint_from_its_weights(files, tmp_path):
    # Files written before the weights were hashed: the claimed fingerprint is ignored.
    def legacy(claim):
        return lambda m: {
            **{k: v for k, v in m.items() if k != "onnx_weights_sha256"},
            "model_fingerprint": claim,
        }

    one = _rewrite(files["a.onnx"], tmp_path / "one.onnx", meta=legacy("0123456789abcdef"))
    two = _rewrite(files["a.onnx"], tmp_path / "two.onnx", meta=legacy("fedcba9876543210"))
    a, b = OnnxBackend(one), OnnxBackend(two)
    assert a.fingerprint == b.fingerprint and a.fingerprint.startswith("onnx-")
    assert a.fingerprint not in ("0123456789abcdef", TorchBackend(files["a.pt"]).fingerprint)


def _set(path: str, value):
    """An edit of the voxid metadata that sets `path` (dotted) to `value`."""

    def edit(meta):
        *parents, last = path.split(".")
        node = meta
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        return meta

    return edit


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: [m], ["metadata is a list"]),
        (lambda m: "crnn", ["metadata is a str"]),
        (_set("embedding_dim", "abc"), ["embedding_dim", "'abc'"]),
        (_set("embedding_dim", -3), ["embedding_dim", "-3"]),
        (_set("embedding_dim", True), ["embedding_dim"]),
        (_set("embedding_dim", 999), ["embedding_dim", "999", "32"]),
        (_set("labels", "tr_a"), ["labels"]),
        (_set("labels", [1, 2, 3]), ["labels"]),
        (_set("audio_config", ["x"]), ["audio_config"]),
        (_set("audio_config.sample_rate", "16k"), ["audio_config.sample_rate"]),
        (_set("feature_config.sample_rate", 0), ["feature_config.sample_rate"]),
        (_set("audio_config.vad", "on"), ["audio_config.vad"]),
        (_set("audio_config.vad.threshold_db", "loud"), ["audio_config.vad.threshold_db"]),
        (_set("audio_config.chunk.seconds", -1), ["audio_config.chunk.seconds"]),
        (_set("audio_config.normalize", 3), ["audio_config.normalize"]),
        (_set("threshold", "high"), ["threshold"]),
        (_set("threshold", float("nan")), ["threshold"]),
        (_set("mode", "guess"), ["mode"]),
        (_set("members", "tr_a"), ["members"]),
        (_set("model_fingerprint", 7), ["model_fingerprint"]),
    ],
)
def test_crafted_metadata_is_refused_in_one_line(files, tmp_path, edit, words):
    crafted = _rewrite(files["a.onnx"], tmp_path / "crafted.onnx", meta=edit)
    _refused(crafted, *words)


def test_crafted_metadata_in_a_torch_file_is_refused(files, tmp_path):
    import torch

    ckpt = torch.load(files["a.pt"], weights_only=True)
    ckpt["voxid"]["threshold"] = "high"
    ckpt["voxid"]["labels"] = list(TRAIN_LABELS)
    path = tmp_path / "crafted.pt"
    torch.save(ckpt, path)
    with pytest.raises(ModelError, match=r"crafted\.pt: .*threshold"):
        Recognizer.load(path, None)
