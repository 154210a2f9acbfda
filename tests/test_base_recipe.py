"""What the base recipe adds to training: speed copies as new speakers, a held-out split of
never-trained-on speakers whose EER picks epochs, and distillation from a teacher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from voxid.data import assign_splits, hold_out_for_verification, load_corpus
from voxid.data.prepare import PrepareConfig, prepare
from voxid.data.store import StoreInfo
from voxid.errors import ConfigError, DataError
from voxid.features import FeatureConfig


@pytest.fixture(scope="module")
def recipe_store(speech_corpus, tmp_path_factory) -> Path:
    """Waveforms of alice and bruno (80/20 train/val, two speed copies each); chloe and
    david held out whole."""
    corpus = assign_splits(load_corpus(speech_corpus), ratios=(0.8, 0.2), seed=0)
    held = corpus.with_items(
        type(it)(
            it.path,
            it.speaker,
            "heldout" if it.speaker in ("chloe", "david") else it.split,
            it.extra,
        )
        for it in corpus.items
    )
    cfg = PrepareConfig(
        feature=FeatureConfig.waveform(), speaker_augment=("speed_0.9", "speed_1.1")
    )
    out = tmp_path_factory.mktemp("recipe") / "store.h5"
    prepare(held, out, cfg, workers=1)
    return out


def test_speed_copies_are_new_speakers_of_the_training_split(recipe_store):
    info = StoreInfo.open(recipe_store)
    names = list(info.speakers)
    assert "alice@speed_0.9" in names and "bruno@speed_1.1" in names
    assert not any(n.startswith(("chloe@", "david@")) for n in names)  # held out: as recorded
    items = info.items
    for k, name in enumerate(names):
        mask = items["label"] == k
        splits = set(np.asarray(items["split"][mask]).astype(str))
        augment = set(np.asarray(items["augment"][mask]).astype(str))
        if "@" in name:
            assert splits == {"train"} and augment == {name.split("@")[1]}
        else:
            assert augment == {""}
    import h5py

    with h5py.File(recipe_store) as h5:
        settings = json.loads(h5.attrs["prepare_config"])
    assert settings["speaker_augment"] == ["speed_0.9", "speed_1.1"]


def test_a_copy_is_either_the_same_speaker_or_a_new_one():
    with pytest.raises(ConfigError, match="speaker_augment"):
        PrepareConfig(augment=("speed_0.9",), speaker_augment=("speed_0.9",))
    with pytest.raises(ConfigError, match="unknown augmentation"):
        PrepareConfig(speaker_augment=("speed_2.0",))


def test_chained_warps_are_one_pseudo_voice_off_both_axes():
    """`speed_0.8+vtlp_1.25` lowers the pitch and leaves the formants where they were; a
    chain of unknown or repeated parts is no augmentation."""
    from voxid.augment import offline_augmentation, pseudo_voices, speed_perturb, vtlp

    sr = 16000
    t = np.arange(sr) / sr
    wav = (0.3 * np.sin(2 * np.pi * 200 * t) + 0.3 * np.sin(2 * np.pi * 1500 * t)).astype(
        np.float32
    )
    chained = offline_augmentation("speed_0.8+vtlp_1.25")(wav, sr, np.random.default_rng(0))
    np.testing.assert_allclose(chained, vtlp(speed_perturb(wav, sr, 0.8), sr, 1.25), atol=1e-6)
    spectrum = np.abs(np.fft.rfft(chained))
    freqs = np.fft.rfftfreq(chained.size, 1 / sr)
    peaks = sorted(freqs[np.argsort(spectrum)[-2:]].round())
    assert peaks[0] == 200 and 1490 <= peaks[1] <= 1510  # speed x vtlp = 0.8 x 1.25 = 1
    for bad in ("speed_0.8+echo", "speed_0.8+speed_0.8", "+", "speed_0.8+"):
        assert offline_augmentation(bad) is None, bad
    with pytest.raises(ConfigError, match="join several with"):
        PrepareConfig(speaker_augment=("speed_0.8+echo",))
    PrepareConfig(speaker_augment=("speed_0.8+vtlp_1.25", "speed_0.8"))  # both are fine
    assert pseudo_voices(["a", "a@speed_0.8+vtlp_1.25", "b@speed_0.8+echo"]).tolist() == [
        False, True, False
    ]  # fmt: skip


def test_hold_out_for_verification_moves_whole_speakers(speech_corpus):
    corpus = assign_splits(load_corpus(speech_corpus), seed=0)
    held = hold_out_for_verification(corpus, 2, seed=1)
    moved = {it.speaker for it in held.items if it.split == "heldout"}
    assert len(moved) == 2
    assert all(it.split == "heldout" for it in held.items if it.speaker in moved)
    assert held.items == hold_out_for_verification(corpus, 2, seed=1).items  # seeded
    with pytest.raises(ConfigError, match="none to train on"):
        hold_out_for_verification(corpus, 4)


def test_pairwise_eer():
    from voxid.training.final import pairwise_eer

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 8))
    spk = np.repeat(np.arange(3), 5)
    near = torch.tensor(centres[spk] + 0.05 * rng.standard_normal((15, 8)), dtype=torch.float32)
    assert pairwise_eer(near, torch.tensor(spk)) == 0.0
    noise = torch.tensor(rng.standard_normal((15, 8)), dtype=torch.float32)
    assert pairwise_eer(noise, torch.tensor(spk)) > 0.2


def _tiny(*extra: str):
    from voxid.config import load_config

    return load_config(
        "base",
        ["model.channels=32", "model.mfa_channels=96", "model.embedding_dim=16", "epochs=2",
         "batch_size=16", "augment.spec_augment=false", "patience=0", *extra],
    )  # fmt: skip


def test_val_eer_picks_epochs_on_speakers_never_trained_on(recipe_store, tmp_path,
                                                          one_torch_thread):  # fmt: skip
    from voxid.training.run import train

    result = train(_tiny(), recipe_store, tmp_path / "run", progress=False)
    m = result.metrics
    assert m["monitor"] == "val_eer" and m["heldout"]["speakers"] == 2
    assert 0 <= m["heldout"]["eer"] <= 1 and m["heldout"]["items"] > 0
    assert m["val"]["n"] > 0  # the training speakers' val split is still classified
    from voxid.checkpoint import read_checkpoint

    labels = read_checkpoint(result.model_path)["voxid"]["labels"]
    assert len(labels) == 6 and "david" not in labels and "chloe" not in labels


def test_training_metrics_rank_people_only():
    """A pseudo-voice column that wins every person's item would hide them; it is left out,
    as are the pseudo-voice's own items, as `voxid evaluate` does."""
    import torch

    from voxid.augment import pseudo_voices
    from voxid.training.final import Predictions, _people_only, classification_metrics

    labels = ["alice", "alice@speed_0.9", "bruno", "bruno@vtlp_1.1"]
    people = ~pseudo_voices(labels)
    assert people.tolist() == [True, False, True, False]
    # items: alice, alice, bruno, alice@speed_0.9 (its own item is no person's)
    probs = np.array([[0.3, 0.6, 0.1, 0.0], [0.2, 0.7, 0.05, 0.05],
                      [0.1, 0.1, 0.2, 0.6], [0.1, 0.8, 0.05, 0.05]])  # fmt: skip
    y = np.array([0, 0, 2, 1])
    mc = np.array([[0], [2], [2], [0]])
    pred = Predictions(probs, y, ["alice", "alice", "bruno", "alice@speed_0.9"], 0.5, mc)
    assert classification_metrics(pred)["top1"] == 0.25  # only the pseudo-voice item is right
    pred.people = people
    m = classification_metrics(pred)
    assert m["n"] == 3 and m["top1"] == 1.0
    assert m["mc_recall_mean"] == pytest.approx(0.75)  # alice 1 of 2, bruno 1 of 1
    logits = torch.tensor([[0.0, 5.0, 1.0, 9.0]])
    masked = _people_only(logits, torch.from_numpy(~people))
    assert masked.argmax(1).item() == 2
    assert _people_only(logits, None).argmax(1).item() == 3


def test_val_eer_needs_a_heldout_split(speech_corpus, tmp_path):
    from voxid.training.run import train

    corpus = assign_splits(load_corpus(speech_corpus), ratios=(0.8, 0.2), seed=0)
    store = prepare(corpus, tmp_path / "s.h5", PrepareConfig(feature=FeatureConfig.waveform()),
                    workers=1).out_path  # fmt: skip
    with pytest.raises(DataError, match="heldout-speakers"):
        train(_tiny(), store, tmp_path / "run", progress=False)


def _targets(store: Path, path: Path, dim: int = 8, fingerprint: str | None = None) -> Path:
    info = StoreInfo.open(store)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((len(info), dim)).astype(np.float16)
    mask = np.asarray(info.items["split"]).astype(str) == "train"
    np.savez(path, embeddings=emb, mask=mask, fingerprint=np.array(fingerprint or info.fingerprint),
             teacher=np.array("test"))  # fmt: skip
    return path


def test_distillation_adds_a_cosine_loss_and_leaves_no_trace(recipe_store, tmp_path,
                                                            one_torch_thread):  # fmt: skip
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from voxid.checkpoint import read_checkpoint
    from voxid.training.run import train

    targets = _targets(recipe_store, tmp_path / "t.npz")
    cfg = _tiny(f"distill_targets={targets}", "distill_weight=2")
    result = train(cfg, recipe_store, tmp_path / "run", progress=False)
    events = EventAccumulator(str(next((tmp_path / "run" / "tb").glob("events*"))))
    events.Reload()
    gaps = [e.value for e in events.Scalars("train/distill")]
    assert gaps and all(0 <= g <= 2 for g in gaps)
    # The map to the teacher's space trains beside the model and is not part of it.
    state = read_checkpoint(result.model_path)["state_dict"]
    assert not any("distill" in k for k in state)
    assert any(k.startswith("distill.") for k in read_checkpoint(result.best_ckpt)["state_dict"])


def test_teacher_targets_must_match_the_store(recipe_store, tmp_path):
    from voxid.training.run import train

    wrong = _targets(recipe_store, tmp_path / "t.npz", fingerprint="0" * 64)
    with pytest.raises(DataError, match="made for another store"):
        train(_tiny(f"distill_targets={wrong}"), recipe_store, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="no such file"):
        train(_tiny(f"distill_targets={tmp_path}/none.npz"), recipe_store, tmp_path / "r2",
              progress=False)  # fmt: skip


def test_resemblyzer_teacher_embeds_every_training_clip(recipe_store, tmp_path):
    pytest.importorskip("resemblyzer")
    from voxid.training.distill import load_targets, teacher_targets

    out = teacher_targets(recipe_store, tmp_path / "r.npz")
    info = StoreInfo.open(recipe_store)
    emb, mask = load_targets(out, info.fingerprint)
    train = np.asarray(info.items["split"]).astype(str) == "train"
    assert emb.shape == (len(info), 256) and np.array_equal(mask, train)
    norms = np.linalg.norm(emb[mask], axis=1)
    assert np.allclose(norms, 1, atol=1e-2) and not emb[~mask].any()
    # The batched front-end reproduces Resemblyzer's own embed_utterance.
    import h5py
    from resemblyzer import VoiceEncoder, audio

    i = int(np.flatnonzero(mask)[0])
    with h5py.File(recipe_store) as h5:
        off, n = int(info.items["offset"][i]), int(info.items["length"][i])
        clip = h5["data"][off : off + n]
    wav = audio.normalize_volume(clip.astype(np.float64), -30, increase_only=True)
    ref = VoiceEncoder("cpu", verbose=False).embed_utterance(wav.astype(np.float32))
    assert float(ref @ emb[i]) > 0.999


def test_ship_base_ships_a_run_and_ships_the_shipped_encoder_again(
    recipe_store, tmp_path, one_torch_thread
):
    """`scripts/ship_base.py` (the last step of `make base-model`): the encoder of a run,
    its short-speech policy on the card, a threshold calibrated on the held-out speakers,
    ONNX beside it; then the shipped file as RUN again, as a new back-end is shipped."""
    import subprocess
    import sys

    from voxid.checkpoint import read_card
    from voxid.inference.export import OnnxBackend
    from voxid.training.run import train

    run = train(_tiny(), recipe_store, tmp_path / "run", progress=False)
    script = Path(__file__).resolve().parents[1] / "scripts" / "ship_base.py"

    def ship(source: Path, out: Path, *flags: str) -> dict:
        out.mkdir()
        cmd = [sys.executable, str(script), str(source), "--data", str(recipe_store),
               "--out", str(out), "--far", "0.2", *flags]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        summary: dict = json.loads(done.stdout[done.stdout.index("{") :])
        return summary

    first = ship(run.model_path.parent, tmp_path / "one", "--min-input-seconds", "2")
    card = read_card(tmp_path / "one" / "base.pt")
    assert card.labels == () and card.audio is not None and card.audio.min_input_seconds == 2.0
    assert card.scoring.threshold == pytest.approx(first["threshold"])
    assert card.base is not None and card.base["trained_speakers"] == 6
    onnx = OnnxBackend(tmp_path / "one" / "base.onnx")
    assert onnx.fingerprint == card.fingerprint and onnx.policy.min_input_seconds == 2.0
    assert first["min_input_seconds"] == 2.0 and not first["lda"]
    index = json.loads((tmp_path / "one" / "models.json").read_text())
    assert "x 3 warps" in index["base"]["description"]  # natural, speed 0.9 and 1.1
    # Shipped again from the shipped file: weights, policy and training record are kept.
    again = ship(tmp_path / "one" / "base.pt", tmp_path / "two")
    card2 = read_card(tmp_path / "two" / "base.pt")
    assert card2.fingerprint == card.fingerprint and card2.base == card.base
    assert card2.audio is not None and card2.audio.min_input_seconds == 2.0
    assert again["threshold"] == pytest.approx(first["threshold"])
