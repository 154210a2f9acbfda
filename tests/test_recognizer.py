"""The Recognizer API on real (espeak-ng) speech with small real models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from voxid.audio import AudioError
from voxid.errors import (
    ConfigError,
    ModelError,
    ModelMismatch,
    NoSpeakersEnrolled,
    NoSuchRegistry,
    RegistryError,
    UnknownSpeaker,
)
from voxid.inference.backends import NotEnoughSpeech, speech_chunks
from voxid.inference.recognizer import Recognizer
from voxid.vad import VadConfig

SMALL = {
    "crnn": dict(
        conv_channels=(8, 16, 16),
        gru_hidden=32,
        attention_channels=16,
        mlp_hidden=64,
        embedding_dim=32,
    ),
    "ecapa": dict(
        channels=32, mfa_channels=96, se_channels=8, attention_channels=16, embedding_dim=24
    ),
    "seed_cnn": dict(hidden=16),
}
TRAIN_LABELS = ["tr_a", "tr_b", "tr_c"]


def make_model(
    path: Path, name: str = "crnn", seed: int = 0, chunk: dict | None = None, **meta_kw
) -> Path:
    """A random-init model written as a real inference file (deterministic per seed);
    `chunk` is its card's `audio_config.chunk` (default: 1-s chunks)."""
    from voxid.checkpoint import make_meta, save_inference_file
    from voxid.models import build_model

    torch.manual_seed(seed)
    model = build_model(name, n_classes=len(TRAIN_LABELS), **SMALL[name])
    audio = {
        "sample_rate": model.feature_config.sample_rate,
        "vad": VadConfig().to_dict(),
        "chunk": chunk or {"seconds": 1.0},
    }
    meta = make_meta(model, TRAIN_LABELS, audio_config=audio, **meta_kw)
    save_inference_file(path, model, meta)
    return path


@pytest.fixture(scope="module")
def crnn_file(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("models") / "crnn.pt")


@pytest.fixture
def rec(crnn_file, tmp_path) -> Recognizer:
    return Recognizer.load(crnn_file, registry=tmp_path / "speakers.db")


def _files(corpus: Path, speaker: str) -> list[Path]:
    return sorted((corpus / speaker).glob("*.wav"))


def test_embed_inputs_agree(rec, speech_wav, tmp_path):
    by_path = rec.embed(speech_wav)
    assert by_path.shape == (32,) and by_path.dtype == np.float32
    assert abs(np.linalg.norm(by_path) - 1) < 1e-5
    np.testing.assert_array_equal(rec.embed(str(speech_wav)), by_path)  # deterministic
    np.testing.assert_array_equal(rec.embed(speech_wav.read_bytes()), by_path)
    wav, sr = sf.read(speech_wav, dtype="float32")
    assert sr != rec.sample_rate  # 22.05 kHz file, resampled to the model's 16 kHz
    np.testing.assert_allclose(rec.embed(wav, sr=sr), by_path, atol=1e-4)
    flac = tmp_path / "same.flac"  # never beside the shared corpus: other tests count its files
    sf.write(flac, wav, sr)
    assert np.dot(rec.embed(flac), by_path) > 0.999


def test_speech_chunks_cover_long_audio():
    sr = 16000
    wav = np.sin(np.arange(int(3.3 * sr)) / 3.0).astype(np.float32)
    chunks = speech_chunks(wav, sr, VadConfig(enabled=False), 1.0)
    # short speech: back-to-back 1-s windows, the last one aligned to the end
    assert chunks.shape == (4, sr)
    np.testing.assert_array_equal(chunks[2], wav[2 * sr : 3 * sr])
    np.testing.assert_array_equal(chunks[-1], wav[-sr:])
    long = np.tile(wav, 3)  # 9.9 s: half-overlapping windows
    chunks = speech_chunks(long, sr, VadConfig(enabled=False), 1.0)
    assert chunks.shape == (19, sr)
    np.testing.assert_array_equal(chunks[1], long[sr // 2 : sr // 2 + sr])
    np.testing.assert_array_equal(chunks[-1], long[-sr:])
    short = speech_chunks(wav[: int(0.6 * sr)], sr, VadConfig(enabled=False), 1.0)
    assert short.shape == (1, sr)  # repeated to one window, not zero-padded
    assert np.count_nonzero(short) > 0.99 * sr


def test_min_input_seconds_repeats_short_speech_to_one_longer_chunk():
    sr, off = 16000, VadConfig(enabled=False)
    wav = np.sin(np.arange(int(3.3 * sr)) / 3.0).astype(np.float32)
    for seconds in (0.6, 1.5, 2.0):  # shorter than 2 s: one 2-s input, the speech repeated
        chunks = speech_chunks(wav[: int(seconds * sr)], sr, off, 1.0, min_input_seconds=2.0)
        assert chunks.shape == (1, 2 * sr)
        np.testing.assert_array_equal(chunks[0, : int(seconds * sr)], wav[: int(seconds * sr)])
        if seconds < 2.0:
            np.testing.assert_array_equal(chunks[0, int(seconds * sr) :][:100], wav[:100])
    # longer speech: the model's 1-s chunks, as without the setting
    np.testing.assert_array_equal(
        speech_chunks(wav, sr, off, 1.0, min_input_seconds=2.0), speech_chunks(wav, sr, off, 1.0)
    )


def test_embed_many_batches_inputs_of_several_lengths(speech_corpus, tmp_path):
    """A model whose card embeds short speech at 2 s: files of short and long speech in one
    batch give each file's own embedding (chunks grouped by length), and the setting is
    applied (short speech embeds differently from the same model without it)."""
    two = make_model(tmp_path / "two.pt", "ecapa", chunk={"seconds": 1.0, "min_input_seconds": 2})
    one = make_model(tmp_path / "one.pt", "ecapa")
    rec, plain = Recognizer.load(two, registry=None), Recognizer.load(one, registry=None)
    assert rec.backend.policy.min_input_seconds == 2.0
    shorts = []
    for i, f in enumerate(_files(speech_corpus, "alice")[:3]):  # about 1.2 s of speech each
        wav, sr = sf.read(f, dtype="float32")
        start = int(np.argmax(np.abs(wav) > 0.05 * np.abs(wav).max()))
        shorts.append(tmp_path / f"short{i}.wav")
        sf.write(shorts[-1], wav[start : start + int(1.2 * sr)], sr)
    parts = [sf.read(f, dtype="float32")[0] for f in _files(speech_corpus, "bruno")[:4]]
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate(parts), 22050)
    paths = [shorts[0], long, shorts[1], shorts[2]]
    lengths = {rec.backend.policy.prepare(p).shape[1] for p in paths}
    assert lengths == {16000, 32000}  # both lengths in one batch
    batch = rec.embed_many(paths, batch_size=64)
    np.testing.assert_allclose(batch, np.stack([rec.embed(p) for p in paths]), atol=1e-5)
    short = shorts[0]
    assert rec.backend.policy.prepare(short).shape == (1, 32000)
    assert np.dot(rec.embed(short), plain.embed(short)) < 0.9999


def test_long_file_embeds(rec, speech_corpus, tmp_path):
    parts = [sf.read(f, dtype="float32")[0] for f in _files(speech_corpus, "bruno")[:5]]
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate(parts), 22050)
    emb = rec.embed(long)
    assert abs(np.linalg.norm(emb) - 1) < 1e-5
    assert np.dot(emb, rec.embed(_files(speech_corpus, "bruno")[0])) > 0.5


def test_bad_audio(rec, tmp_path, write_wav):
    from conftest import tone

    short = np.concatenate([tone(0.3), np.zeros(16000, np.float32)])
    with pytest.raises(NotEnoughSpeech, match=r"short.wav: only 0\.\d+ s of speech"):
        rec.embed(write_wav("short.wav", short))
    with pytest.raises(AudioError, match=r"junk.wav"):
        junk = tmp_path / "junk.wav"
        junk.write_bytes(b"RIFF not really a wave file" * 10)
        rec.embed(junk)
    with pytest.raises(AudioError, match=r"missing.wav"):
        rec.embed(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="digital silence"):
        rec.embed(np.zeros(16000, np.float32), sr=16000)
    with pytest.raises(AudioError, match="NaN"):
        rec.embed(np.full(16000, np.nan, np.float32), sr=16000)
    with pytest.raises(ConfigError, match="sr"):
        rec.embed(tone(1.0))
    with pytest.raises(ConfigError, match="expected a path"):
        rec.embed(12345)


def test_enroll_verify_identify_remove(rec, speech_corpus):
    alice, bruno = _files(speech_corpus, "alice"), _files(speech_corpus, "bruno")
    record = rec.enroll("alice", alice[:2])
    assert record.n_utterances == 2
    expected = rec.embed(alice[0]) + rec.embed(alice[1])
    np.testing.assert_allclose(record.centroid, expected / np.linalg.norm(expected), atol=1e-5)
    again = rec.enroll("alice", alice[2])  # a repeated enrolment adds utterances
    assert again.n_utterances == 3
    np.testing.assert_allclose(rec.registry.embeddings("alice")[2], rec.embed(alice[2]), atol=1e-6)
    assert rec.enroll("alice", alice[:1], replace=True).n_utterances == 1
    rec.enroll("bruno", bruno[:2])

    v = rec.verify("alice", alice[3])
    assert v.source == "enrolled" and v.threshold == rec.threshold and v.std is None
    assert v.accepted == (v.score >= v.threshold)
    assert abs(v.score - float(rec.embed(alice[3]) @ rec.registry.get("alice").centroid)) < 1e-5

    only_enrolled = rec.identify(bruno[4], top_k=3)  # the default: enrolled speakers only
    assert {c.name for c in only_enrolled.candidates} == {"alice", "bruno"}
    ident = rec.identify(bruno[4], top_k=3, include_training=True)
    assert len(ident.candidates) == 3
    scores = [c.score for c in ident.candidates]
    assert scores == sorted(scores, reverse=True)
    name, score = ident.candidates[0]  # candidates unpack as (name, score)
    assert (ident.name, ident.accepted) == (
        (name, True) if score >= rec.threshold else ("unknown", False)
    )
    assert {ident.sources[n] for n, _ in ident.candidates} <= {"enrolled", "training"}

    strict = Recognizer.load(rec.backend.source, rec.registry, threshold=1.01)
    assert strict.identify(bruno[4]).name == "unknown"  # open set: nobody passes

    names = {(s.name, s.source) for s in rec.speakers(include_training=True)}
    assert names == {
        ("alice", "enrolled"),
        ("bruno", "enrolled"),
        *((t, "training") for t in TRAIN_LABELS),
    }
    rec.remove("bruno")
    assert "bruno" not in {s.name for s in rec.speakers()}
    with pytest.raises(UnknownSpeaker, match="'bruno': not enrolled"):
        rec.remove("bruno")
    with pytest.raises(UnknownSpeaker, match="'nobody': not enrolled and not a training"):
        rec.verify("nobody", alice[3], include_training=True)
    with pytest.raises(RegistryError, match="speaker name"):
        rec.enroll("../../etc", alice[:1])
    with pytest.raises(ConfigError, match="top_k"):
        rec.identify(alice[3], top_k=0)


def test_training_speakers_use_the_class_bank(rec, crnn_file, speech_wav):
    from voxid.checkpoint import load_checkpoint

    _, model = load_checkpoint(crnn_file)
    v = rec.verify("tr_b", speech_wav, include_training=True)
    assert v.source == "training"
    weight = model.head.weight[1].detach().numpy()
    expected = float(rec.embed(speech_wav) @ (weight / np.linalg.norm(weight)))
    assert abs(v.score - expected) < 1e-5


def test_training_speakers_are_offered_only_when_asked(crnn_file, tmp_path, speech_corpus):
    """Class-weight scores run on another scale than the threshold calibrated on enrolments
    (#15 item 14): training speakers are listed, verified and ranked only on request."""
    alice = _files(speech_corpus, "alice")
    rec = Recognizer.load(crnn_file, registry=tmp_path / "speakers.db")
    assert rec.speakers() == []
    assert [s.name for s in rec.speakers(include_training=True)] == TRAIN_LABELS
    with pytest.raises(UnknownSpeaker, match=r"'tr_a': not enrolled .*include_training=True"):
        rec.verify("tr_a", alice[0])
    assert rec.verify("tr_a", alice[0], include_training=True).source == "training"
    with pytest.raises(NoSpeakersEnrolled, match=r"no enrolled speakers.*include_training"):
        rec.identify(alice[0])
    ranked = rec.identify(alice[0], top_k=5, include_training=True)
    assert sorted(c.name for c in ranked.candidates) == TRAIN_LABELS
    rec.enroll("alice", alice[:2])
    assert [c.name for c in rec.identify(alice[3], top_k=5).candidates] == ["alice"]
    assert [s.name for s in rec.speakers()] == ["alice"]
    with pytest.raises(UnknownSpeaker, match="'nobody': not enrolled"):
        rec.verify("nobody", alice[3])


def test_enrolling_with_a_model_of_few_speakers_warns(crnn_file, tmp_path, speech_wav):
    """Open set (#15 item 16): a model that heard few voices accepts strangers; enrolling
    with one warns once, naming the count and the shipped base model."""
    import warnings

    from voxid.errors import VoxidWarning

    rec = Recognizer.load(crnn_file, registry=tmp_path / "a.db")
    with pytest.warns(VoxidWarning, match=r"trained on 3 speakers .*voxid models.*finetune"):
        rec.enroll("alice", speech_wav)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec.enroll("bruno", speech_wav)  # once per recogniser
    many = make_model(tmp_path / "many.pt", train_speakers=[f"s{i}" for i in range(100)])
    # Speed-augmented copies (`prepare --speaker-augment`) are not new voices.
    copies = [f"s{i}@{a}" for i in range(40) for a in ("orig", "speed0.9", "speed1.1")]
    few = make_model(tmp_path / "few.pt", train_speakers=copies)
    tuned = make_model(tmp_path / "tuned.pt", init="base")  # its encoder heard the base's voices
    assert "trained on 40 speakers" in Recognizer.load(few, None).open_set_warning
    for quiet in (many, tuned, "base"):
        rec = Recognizer.load(quiet, registry=tmp_path / f"{Path(quiet).stem}.db")
        assert rec.open_set_warning is None, quiet
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rec.enroll("alice", speech_wav)


def test_reads_never_create_the_registry(crnn_file, tmp_path, speech_wav):
    """identify/verify/speakers with a registry file that does not exist create nothing;
    with require_registry they say so instead of answering from the training speakers."""
    missing = tmp_path / "typo" / "speakers.db"
    rec = Recognizer.load(crnn_file, registry=missing)
    first = rec.identify(speech_wav, top_k=1, include_training=True).candidates[0]
    assert first.name in TRAIN_LABELS
    assert rec.verify("tr_a", speech_wav, include_training=True).source == "training"
    assert [s.name for s in rec.speakers(include_training=True)] == TRAIN_LABELS
    with pytest.raises(UnknownSpeaker, match="not enrolled"):
        rec.remove("tr_a")
    assert not (tmp_path / "typo").exists()
    strict = Recognizer.load(crnn_file, registry=missing, require_registry=True)
    for read in (
        lambda: strict.identify(speech_wav),
        lambda: strict.verify("tr_a", speech_wav),
        strict.speakers,
    ):
        with pytest.raises(NoSuchRegistry, match=r"typo/speakers\.db: no such registry"):
            read()
    assert not (tmp_path / "typo").exists()
    strict.enroll("alice", speech_wav)  # only enrolment creates a registry
    assert missing.is_file() and strict.identify(speech_wav).name == "alice"
    # registry=None is unchanged: the training speakers, and no registry for enrol.
    bare = Recognizer.load(crnn_file, registry=None, require_registry=True)
    first = bare.identify(speech_wav, top_k=1, include_training=True).candidates[0]
    assert first.name in TRAIN_LABELS
    with pytest.raises(RegistryError, match="no registry"):
        bare.enroll("bob", speech_wav)


def test_other_model_is_refused(rec, tmp_path, speech_wav):
    rec.enroll("alice", speech_wav)
    other = make_model(tmp_path / "other.pt", seed=1)
    other_rec = Recognizer.load(other, registry=tmp_path / "speakers.db")
    with pytest.raises(
        ModelMismatch,
        match=f"model {rec.model_fingerprint}.*this model is {other_rec.model_fingerprint}",
    ):
        other_rec.enroll("bob", speech_wav)


def test_stored_threshold_and_override(tmp_path, speech_wav):
    path = make_model(tmp_path / "m.pt", threshold=0.42, threshold_kind="cosine:eer")
    assert Recognizer.load(path, None).threshold == 0.42
    assert Recognizer.load(path, None, threshold=0.7).threshold == 0.7
    with pytest.raises(RegistryError, match="no registry"):
        Recognizer.load(path, None).enroll("alice", speech_wav)
    # an authentication model's classes (member / outsider) are not speakers
    auth = Recognizer.load(make_model(tmp_path / "auth.pt", mode="authenticate"), None)
    assert auth.speakers() == []


def test_mc_dropout_gives_a_spread(crnn_file, tmp_path, speech_corpus):
    alice = _files(speech_corpus, "alice")
    rec = Recognizer.load(crnn_file, tmp_path / "s.db", mc_samples=6)
    rec.enroll("alice", alice[:2])
    v1, v2 = rec.verify("alice", alice[3]), rec.verify("alice", alice[3])
    assert v1.std is not None and v1.std > 0
    assert v1.score != v2.score  # sampled, unlike the deterministic default
    ident = rec.identify(alice[3])
    assert set(ident.stds) == {c.name for c in ident.candidates}
    # enrolment stays deterministic under MC dropout
    det = Recognizer.load(crnn_file, None)
    np.testing.assert_allclose(rec.embed(alice[0]), det.embed(alice[0]), atol=1e-6)
    with pytest.raises(ConfigError, match="mc_samples"):
        Recognizer.load(crnn_file, None, mc_samples=-1)


def test_pure_classifier(tmp_path, speech_corpus):
    rec = Recognizer.load(make_model(tmp_path / "cnn.pt", "seed_cnn"), tmp_path / "s.db")
    wav = _files(speech_corpus, "chloe")[0]
    ident = rec.identify(wav, top_k=3)
    assert [c.name for c in ident.candidates] and {
        ident.sources[c.name] for c in ident.candidates
    } == {"class"}
    total = sum(c.score for c in ident.candidates)
    assert 0 < total <= 1 + 1e-5  # softmax probabilities over the training classes
    assert [(s.name, s.source) for s in rec.speakers()] == [(t, "training") for t in TRAIN_LABELS]
    for call in (lambda: rec.enroll("alice", wav), lambda: rec.verify("tr_a", wav)):
        with pytest.raises(ModelError, match="pure classifier"):
            call()


def test_embed_many_batches_and_skips(rec, speech_corpus, tmp_path):
    files = _files(speech_corpus, "david")[:3]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"nope")
    errors: list = []
    embs = rec.embed_many([files[0], bad, files[1], files[2]], batch_size=4, errors=errors)
    assert embs.shape == (4, 32) and np.isnan(embs[1]).all()
    assert len(errors) == 1 and "bad.wav" in errors[0][0]
    for row, f in zip(embs[[0, 2, 3]], files, strict=True):
        np.testing.assert_allclose(row, rec.embed(f), atol=1e-5)
    with pytest.raises(AudioError):
        rec.embed_many([bad])


def test_no_lightning_on_import():
    code = (
        "import sys, voxid.inference.recognizer, voxid.inference.export, voxid.inference.registry; "
        "print(any(m in sys.modules for m in ('lightning', 'pytorch_lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _trained(request) -> Path:
    try:
        return Path(request.getfixturevalue("trained_model"))
    except pytest.FixtureLookupError:
        pytest.skip("trained_model fixture not available")


@pytest.mark.slow
def test_trained_model_tells_voices_apart(request, speech_corpus, tmp_path):
    rec = Recognizer.load(_trained(request), tmp_path / "s.db")
    enrolled = ["alice", "bruno", "chloe"]
    for name in enrolled:
        rec.enroll(name, _files(speech_corpus, name)[:3])
    hits = [
        rec.identify(f).candidates[0].name == name
        for name in enrolled
        for f in _files(speech_corpus, name)[5:]
    ]
    assert np.mean(hits) >= 0.8
    # a never-enrolled voice scores lower against the others than they do against themselves
    own = np.mean([rec.verify(n, _files(speech_corpus, n)[6]).score for n in enrolled])
    stranger = max(rec.verify(n, _files(speech_corpus, "david")[6]).score for n in enrolled)
    assert stranger < own
