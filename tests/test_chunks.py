"""One audio -> chunks -> embedding path: evaluation, calibration and LDA fitting embed a
recording exactly as `Recognizer.embed` does (`voxid.inference.chunks`)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def rec(random_model_file):
    from voxid.inference.recognizer import Recognizer

    return Recognizer.load(random_model_file, None)


@pytest.fixture(scope="module")
def corpus_store(speech_corpus, tmp_path_factory):
    """A waveform store of the espeak corpus: 2 files of each speaker in val, the rest train."""
    from voxid.data import load_corpus
    from voxid.data.prepare import PrepareConfig, prepare
    from voxid.features import FeatureConfig

    corpus = load_corpus(speech_corpus)
    seen: dict[str, int] = {}
    items = []
    for it in corpus:
        seen[it.speaker] = seen.get(it.speaker, 0) + 1
        items.append(type(it)(it.path, it.speaker, "val" if seen[it.speaker] <= 2 else "train",
                              it.extra))  # fmt: skip
    out = tmp_path_factory.mktemp("chunks") / "store.h5"
    cfg = PrepareConfig(feature=FeatureConfig(kind="waveform"))
    prepare(corpus.with_items(items), out, cfg, workers=1)
    return out


def _model(path):
    from voxid.checkpoint import load_checkpoint

    return load_checkpoint(path)


def test_trial_list_embeddings_equal_the_recognisers(rec, random_model_file, speech_corpus):
    """evaluate --trials embeds each file exactly as Recognizer.embed (bit for bit)."""
    from voxid.evaluation.trials import embed_files

    card, model = _model(random_model_file)
    files = sorted(speech_corpus.glob("*/*.wav"))[::5]
    embs, skipped = embed_files(model, files, card)
    assert not skipped and set(embs) == set(files)
    for f in files:
        assert np.array_equal(embs[f], rec.embed(f)), f


def test_calibration_and_lda_embed_each_recording_as_the_recogniser(
    rec, random_model_file, corpus_store, tmp_path
):
    """calibrate's utterances and fit-lda's training items are Recognizer.embed of the
    store's source recordings (the LDA mean is their mean)."""
    import shutil

    from voxid.calibration import store_utterances, utterance_embeddings
    from voxid.data.loader import StoreDataset
    from voxid.lda import fit_run_lda

    ds = StoreDataset(corpus_store, split="val", include_augmented=False)
    files = sorted(set(ds.items["source"].astype(str)))
    ds.close()
    utt, labels, _, _ = utterance_embeddings(random_model_file, corpus_store, "val")
    assert len(utt) == len(files) == 8 and sorted(np.unique(labels).tolist()) == [0, 1, 2, 3]
    for row, f in zip(utt, files, strict=True):
        assert np.array_equal(row, rec.embed(f)), f

    card, model = _model(random_model_file)
    train, _, _, skipped = store_utterances(model, card, corpus_store, "train")
    assert not skipped and len(train) == 24
    run = tmp_path / "model.pt"
    shutil.copy(random_model_file, run)
    rep = fit_run_lda(run, corpus_store)
    assert rep.n_items == 24 and rep.n_speakers == 4
    _, fitted = _model(run)
    ds = StoreDataset(corpus_store, split="train", include_augmented=False)
    train_files = sorted(set(ds.items["source"].astype(str)))
    ds.close()
    mean = np.mean([rec.embed(f).astype(np.float64) for f in train_files], axis=0)
    np.testing.assert_allclose(fitted.projection.mean.numpy(), mean, rtol=0, atol=1e-6)


def test_one_minimum_speech_rule_everywhere(rec, random_model_file, write_wav):
    """0.3 s of speech is refused by the recogniser, skipped by trial lists and by the
    store path alike: one constant, `voxid.inference.chunks.MIN_SPEECH_SECONDS`."""
    from conftest import tone
    from voxid.audio import AudioError
    from voxid.evaluation.trials import embed_files
    from voxid.inference import backends, chunks
    from voxid.inference.chunks import MIN_SPEECH_SECONDS, NotEnoughSpeech

    assert backends.MIN_SPEECH_SECONDS is chunks.MIN_SPEECH_SECONDS == 0.5
    assert backends.NotEnoughSpeech is NotEnoughSpeech and issubclass(NotEnoughSpeech, AudioError)
    wav = np.concatenate([np.zeros(8000, np.float32), tone(0.3), np.zeros(8000, np.float32)])
    short = write_wav("short.wav", wav)
    with pytest.raises(NotEnoughSpeech, match=f"need at least {MIN_SPEECH_SECONDS} s"):
        rec.embed(short)
    card, model = _model(random_model_file)
    embs, skipped = embed_files(model, [short], card)
    assert not embs and "need at least 0.5 s" in skipped[0][1]
