"""The model card (`voxid.card.ModelCard`): one typed description, read from every layout
voxid has written, written back in the same layout, refused in one line when malformed."""

from __future__ import annotations

import dataclasses
import json

import pytest

from voxid.card import DEFAULT_SAMPLE_RATE, ModelCard
from voxid.errors import ModelError
from voxid.vad import VadConfig

#: A `model.pt` description as voxid 0.1 wrote it before the VAD had a `method` and before
#: fit-lda and base provenance existed (the layout of the shipped base.pt's older sibling).
LEGACY_PT = {
    "model_name": "crnn",
    "hparams": {"conv_channels": [16, 32, 64], "gru_hidden": 64, "embedding_dim": 64},
    "feature_config": {"kind": "logmel", "sample_rate": 16000, "n_mels": 64, "n_fft": 2048,
                       "win_length": 2048, "hop_length": 512, "f_min": 0.0, "f_max": None,
                       "top_db": 80.0, "image_size": 200, "n_mfcc": 20},
    "audio_config": {
        "sample_rate": 16000,
        "normalize": None,
        "vad": {"enabled": True, "threshold_db": -35.0, "frame_ms": 25, "hop_ms": 10,
                "min_speech_s": 0.1, "min_silence_s": 0.2, "pad_s": 0.05},
        "chunk": {"seconds": 1.0, "hop_seconds": None, "tail": "pad", "min_tail_seconds": 0.5},
    },
    "labels": ["alice", "bruno"],
    "mode": "identify",
    "members": [],
    "auth_scoring": None,
    "threshold": None,
    "threshold_kind": None,
    "data_fingerprint": "1ef4c7",
    "embedding_dim": 64,
    "train_speakers": ["alice", "bruno"],
    "init": None,
    "model_fingerprint": "0123456789abcdef",
    "created": "2026-01-01T00:00:00+00:00",
    "voxid_version": "0.1.0",
}  # fmt: skip


def test_round_trip_keeps_the_layout_and_the_order():
    card = ModelCard.from_dict(LEGACY_PT, "old.pt")
    assert card.to_dict() == LEGACY_PT and list(card.to_dict()) == list(LEGACY_PT)
    assert ModelCard.from_dict(card.to_dict(), "again") == card
    assert card.sample_rate == 16000 and "sample_rate" not in card.features
    assert card.model.name == "crnn" and card.model.embedding_dim == 64
    assert card.labels == ("alice", "bruno") and card.speakers_heard == card.labels
    assert card.onnx is None and card.scoring.projection is None


def test_legacy_layouts_load_with_their_defaults():
    # Stored before the VAD had `method`: Silero with the floor (issue #15), as before.
    card = ModelCard.from_dict(LEGACY_PT, "old.pt")
    assert card.audio is not None and card.audio.vad_config() == VadConfig()
    assert card.audio.chunk_seconds == 1.0
    # An early export: no mode, members, train_speakers, audio or weights hash.
    early = {"labels": ["a", "b"], "embedding_dim": 8, "onnx_precision": "fp32",
             "feature_config": {"kind": "fbank", "sample_rate": 8000}}  # fmt: skip
    card = ModelCard.from_dict(early, "early.onnx")
    assert card.mode == "identify" and card.members == () and card.train_speakers is None
    assert card.speakers_heard == ("a", "b") and card.audio is None
    assert card.sample_rate == 8000 and card.onnx is not None
    assert card.onnx.weights_sha256 is None and "onnx_weights_sha256" not in card.to_dict()
    # Nothing at all: the recipes' rate. Unknown fields survive a rewrite.
    assert ModelCard.from_dict({}, "bare.onnx").sample_rate == DEFAULT_SAMPLE_RATE
    odd = ModelCard.from_dict({**LEGACY_PT, "comment": "hand-made"}, "odd.pt")
    assert odd.to_dict()["comment"] == "hand-made"
    # A GMM run's model.json says embedding_dim 0: it has no embeddings.
    gmm = ModelCard.from_dict({**LEGACY_PT, "model_name": "gmm", "embedding_dim": 0}, "m.json")
    assert gmm.model.embedding_dim == 0


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("labels", "alice", "labels is 'alice', expected a list of names"),
        ("embedding_dim", 0, "embedding_dim is 0, expected a positive integer"),
        ("threshold", float("inf"), "threshold is inf, expected a finite number or null"),
        ("hparams", [1], "hparams is [1], expected an object"),
        ("init", 3, "init is 3, expected a string"),
        ("onnx_outputs", "embedding", "onnx_outputs is 'embedding', expected a list of names"),
        ("audio_config.vad.method", "webrtc", "audio_config.vad.method is 'webrtc'"),
        ("audio_config.chunk", 1.0, "audio_config.chunk is 1.0, expected an object"),
        ("audio_config.sample_rate", 8000, "audio_config.sample_rate is 8000, but"),
        ("audio_config.chunk.min_input_seconds", 0.5, "min_input_seconds is 0.5, expected a"),
        ("audio_config.chunk.min_input_seconds", "2", "min_input_seconds is '2', expected a"),
        ("audio_config.chunk.min_input_seconds", 60, "from the chunk length to 10"),
    ],
)
def test_a_bad_field_is_one_line_naming_file_and_field(field, value, words):
    meta = json.loads(json.dumps(LEGACY_PT))
    *parents, last = field.split(".")
    node = meta
    for key in parents:
        node = node[key]
    node[last] = value
    with pytest.raises(ModelError) as err:
        ModelCard.from_dict(meta, "bad.pt")
    message = str(err.value)
    assert message.startswith("bad.pt: metadata ") and words in message
    assert "\n" not in message


def test_the_shipped_base_model_has_one_card_in_both_files():
    import onnx
    import torch

    from voxid.checkpoint import read_card
    from voxid.inference.export import META_KEY
    from voxid.pretrained import resolve

    pt, onnx_path = resolve("base", "pt"), resolve("base", "onnx")
    stored = torch.load(pt, weights_only=True)["voxid"]
    card = read_card(pt)
    assert card.to_dict() == stored  # the shipped file reads and writes back unchanged
    assert card.sample_rate == 16000 and card.model.name == "ecapa"
    assert card.scoring.threshold_kind == "asnorm:far=0.01" and card.scoring.has_cohort
    assert card.base is not None and card.base["trained_speakers"] > 1000
    # Short speech is embedded at 2 s, as its threshold was calibrated (MODEL_CARD.md).
    assert card.audio is not None and card.audio.min_input_seconds == 2.0
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    exported = ModelCard.from_dict(json.loads(props[META_KEY]), str(onnx_path))
    assert exported.to_dict() == json.loads(props[META_KEY])
    assert exported.onnx is not None and exported.onnx.precision == "fp32"
    assert dataclasses.replace(exported, onnx=None) == card


def test_a_trained_checkpoint_and_its_onnx_export_carry_the_same_card(trained_run, tmp_path):
    from voxid.checkpoint import load_checkpoint, read_card
    from voxid.inference.export import OnnxBackend, export_onnx

    best, _ = load_checkpoint(trained_run / "best.ckpt")
    assert read_card(trained_run / "model.pt") == best == read_card(trained_run)
    assert best.labels == ("alice", "bruno", "chloe", "david") and best.audio is not None
    assert best.sample_rate == best.feature_config().sample_rate == 16000
    export_onnx(trained_run, tmp_path / "m.onnx", check_seconds=1.0)
    backend = OnnxBackend(tmp_path / "m.onnx")
    assert backend.card.onnx is not None and backend.card.onnx.outputs == ("embedding",)
    assert dataclasses.replace(backend.card, onnx=None) == best
    assert backend.sample_rate == best.sample_rate and backend.fingerprint == best.fingerprint


def test_threshold_updates_keep_everything_else():
    card = ModelCard.from_dict(LEGACY_PT, "old.pt")
    tuned = card.with_threshold(0.5, "cosine:eer")
    assert tuned.scoring.threshold == 0.5 and tuned.scoring.threshold_kind == "cosine:eer"
    assert dataclasses.replace(tuned, scoring=card.scoring) == card
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.mode = "authenticate"  # type: ignore[misc]
