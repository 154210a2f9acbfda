"""The recogniser commands, run through the real typer app and a real `voxid` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from test_recognizer import make_model
from voxid.cli import app


def run(*args: str, env: dict | None = None):
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("cli") / "model.pt")


def test_enroll_verify_identify_speakers(model, speech_corpus, tmp_path):
    db = str(tmp_path / "speakers.db")
    alice = sorted((speech_corpus / "alice").glob("*.wav"))
    env = {"VOXID_MODEL": str(model), "VOXID_REGISTRY": db}
    out = json.loads(run("enroll", "alice", str(alice[0]), str(alice[1]), "--json", env=env))
    assert out["n_utterances"] == 2 and out["registry"] == db
    out = json.loads(run("enroll", "alice", str(alice[2]), "--json", env=env))
    assert out["n_utterances"] == 3

    v = json.loads(run("verify", "alice", str(alice[3]), "--json", "--threshold", "0.2", env=env))
    assert v["name"] == "alice" and v["threshold"] == 0.2 and v["accepted"] == (v["score"] >= 0.2)
    assert "score" in run("verify", "alice", str(alice[3]), env=env)

    args = ("identify", str(alice[4]), str(alice[5]), "-k", "2", "--json")
    ident = json.loads(run(*args, "--include-training", env=env))
    assert set(ident) == {str(alice[4]), str(alice[5])}
    assert all(len(r["candidates"]) == 2 for r in ident.values())
    enrolled_only = json.loads(run(*args, env=env))  # default: only enrolled speakers compete
    assert all([c["name"] for c in r["candidates"]] == ["alice"] for r in enrolled_only.values())

    listed = json.loads(run("speakers", "list", "--json", "--registry", db))
    assert [(s["name"], s["n_utterances"]) for s in listed] == [("alice", 3)]
    with_training = json.loads(run("speakers", "list", "--include-training", "--json", env=env))
    assert {s["source"] for s in with_training} == {"enrolled", "training"}
    run("speakers", "remove", "alice", "--registry", db)
    assert json.loads(run("speakers", "--json", "--registry", db)) == []


def test_embed_skips_bad_files(model, speech_corpus, tmp_path):
    files = sorted((speech_corpus / "chloe").glob("*.wav"))[:2]
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio at all")
    out_path = tmp_path / "emb.npy"
    out = json.loads(
        run(
            "embed",
            str(files[0]),
            str(bad),
            str(files[1]),
            "-o",
            str(out_path),
            "--model",
            str(model),
            "--json",
        )
    )
    embs = np.load(out_path)
    assert out["shape"] == [3, 32] and embs.shape == (3, 32)
    assert np.isnan(embs[1]).all() and np.isfinite(embs[[0, 2]]).all()
    assert out["skipped"][0]["file"] == str(bad)


def test_export_and_calibrate(model, speech_corpus, tmp_path):
    import shutil

    from voxid.data import assign_splits, load_corpus
    from voxid.data.prepare import PrepareConfig, prepare

    onnx = tmp_path / "m.onnx"
    rep = json.loads(run("export", str(model), "--onnx", str(onnx), "--json"))
    assert onnx.is_file() and rep["max_abs_diff"] <= 1e-4

    store = tmp_path / "store.h5"
    corpus = assign_splits(load_corpus(speech_corpus), ratios=(0.5, 0.5, 0.0))
    prepare(corpus, store, PrepareConfig(), workers=1)
    run_copy = tmp_path / "run.pt"
    shutil.copy(model, run_copy)
    cal = json.loads(
        run("calibrate", str(run_copy), "--data", str(store), "--split", "val", "--eer", "--json")
    )
    assert cal["kind"] == "cosine:eer" and cal["n_speakers"] == 4
    assert 0 <= cal["far"] <= 1 and 0 <= cal["frr"] <= 1
    from voxid.inference.recognizer import Recognizer

    assert Recognizer.load(run_copy, None).threshold == pytest.approx(cal["threshold"])
    cal = json.loads(
        run("calibrate", str(run_copy), "--data", str(store), "--far", "0.25", "--json")
    )
    assert cal["kind"] == "cosine:far=0.25" and cal["far"] <= 0.25


def test_errors_exit_1_with_one_line(model, tmp_path, speech_wav):
    from voxid.inference.registry import Registry

    Registry(tmp_path / "s.db", None).close()  # exists, nobody enrolled
    env = {**os.environ, "VOXID_MODEL": str(model), "VOXID_REGISTRY": str(tmp_path / "s.db")}
    proc = subprocess.run(
        [sys.executable, "-m", "voxid", "verify", "nobody", str(speech_wav)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: speaker 'nobody': not enrolled"


def test_training_speakers_only_with_include_training(model, tmp_path, speech_wav):
    """verify, identify and speakers list leave the model's training speakers out unless
    --include-training is given (#15 item 14)."""
    env = {**os.environ, "VOXID_MODEL": str(model), "VOXID_REGISTRY": str(tmp_path / "s.db")}
    run("enroll", "alice", str(speech_wav), env=env)
    proc = subprocess.run(
        [sys.executable, "-m", "voxid", "verify", "tr_a", str(speech_wav)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1 and "--include-training" in proc.stderr, proc.stderr
    v = json.loads(run("verify", "tr_a", str(speech_wav), "--include-training", "--json", env=env))
    assert v["source"] == "training"
    listed = json.loads(run("speakers", "list", "--json", env=env))
    assert [(s["name"], s["source"]) for s in listed] == [("alice", "enrolled")]
    listed = json.loads(run("speakers", "list", "--include-training", "--json", env=env))
    assert {s["source"] for s in listed} == {"enrolled", "training"}
    for only in ((), ("--enrolled-only",)):  # the default, and its explicit name
        ident = json.loads(run("identify", str(speech_wav), *only, "--json", env=env))
        assert [c["name"] for c in ident[str(speech_wav)]["candidates"]] == ["alice"]


def test_enroll_warns_once_when_the_model_heard_few_speakers(model, tmp_path, speech_wav):
    """One 'voxid: warning:' line on stderr naming the count and the base model (#15 item 16)."""
    env = {**os.environ, "VOXID_MODEL": str(model), "VOXID_REGISTRY": str(tmp_path / "s.db")}
    proc = subprocess.run(
        [sys.executable, "-m", "voxid", "enroll", "alice", str(speech_wav), str(speech_wav)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxid: warning: "), proc.stderr
    assert "trained on 3 speakers" in lines[0] and "voxid models" in lines[0]
    assert "enrolled" in proc.stdout


def test_calibration_with_too_few_utterances_says_what_to_do():
    """One file per speaker in the split: the error counts them and names the remedies."""
    import numpy as np

    from voxid.calibration import cosine_trials
    from voxid.errors import DataError

    embs = np.eye(3, dtype=np.float32)
    with pytest.raises(DataError, match=r"at most 1 utterances .*--n-enroll.*--split"):
        cosine_trials(embs, np.array([0, 1, 2]), n_enroll=3)
    tar, non, _ = cosine_trials(
        np.eye(2, dtype=np.float32)[[0, 0, 1, 1]], np.array([0, 0, 1, 1]), 1
    )
    # Leave-one-out: each of the 4 files is tested against the other file of its speaker
    # and against both enrolments of the other speaker.
    assert tar.tolist() == [1.0] * 4 and non.tolist() == [0.0] * 8
    # By default the enrolment shrinks to leave two speakers a test utterance: three files
    # each (30 files per speaker under the default 80/10/10 split) enrol with two; each
    # file meets the one enrolment of its speaker without it and all 6 of the others.
    labels = np.repeat([0, 1, 2], 3)
    tar, non, _ = cosine_trials(np.eye(3, dtype=np.float32)[labels], labels)
    assert (tar.size, non.size) == (9, 54)
    with pytest.raises(DataError, match=r"more than 1 utterances, found 0"):
        cosine_trials(embs, np.array([0, 1, 2]))


def test_fit_lda_stores_a_projection_every_path_uses(trained_run, speech_wav, tmp_path):
    """fit-lda on the training split: both run files gain it, a calibrated cosine threshold
    is cleared, torch and ONNX embeddings agree, and refitting gives the same projection."""
    import shutil

    import torch

    from voxid.checkpoint import load_checkpoint, read_checkpoint, save_threshold
    from voxid.inference.recognizer import Recognizer

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    store = trained_run.parent / "store.h5"
    save_threshold(run_dir, 0.61, "cosine:eer")
    before = read_checkpoint(run_dir / "model.pt")["voxid"]
    rep = json.loads(run("fit-lda", str(run_dir), "--data", str(store), "--json"))
    assert rep["input_dim"] == 64 and rep["dim"] == 3 and rep["n_speakers"] == 4
    assert rep["cleared_threshold"] == pytest.approx(0.61)
    assert sorted(rep["saved_to"]) == sorted(
        [str(run_dir / "model.pt"), str(run_dir / "best.ckpt")]
    )
    (_, small), (card, best) = (
        load_checkpoint(run_dir / "model.pt"),
        load_checkpoint(run_dir / "best.ckpt"),
    )
    assert card.model.embedding_dim == 3 and card.scoring.threshold is None
    assert card.fingerprint != before["model_fingerprint"]
    projection = card.scoring.projection or {}
    assert projection["split"] == "train" and "optimizer_states" in read_checkpoint(
        run_dir / "best.ckpt")  # fmt: skip
    for name, value in small.state_dict().items():
        torch.testing.assert_close(best.state_dict()[name], value, rtol=0, atol=0)

    rec = Recognizer.load(run_dir, None)
    emb = rec.embed(speech_wav)
    assert emb.shape == (3,) and rec.threshold != pytest.approx(0.61)
    onnx = tmp_path / "m.onnx"
    exported = json.loads(run("export", str(run_dir), "--onnx", str(onnx), "--json"))
    assert exported["max_abs_diff"] <= 1e-4
    onnx_rec = Recognizer.load(onnx, None)
    np.testing.assert_allclose(onnx_rec.embed(speech_wav), emb, atol=1e-4)
    assert onnx_rec.backend.class_weights.shape == (4, 3)

    weight = small.projection.weight.clone()
    run("fit-lda", str(run_dir), "--data", str(store))
    _, again = load_checkpoint(run_dir / "model.pt")
    torch.testing.assert_close(again.projection.weight, weight)


def test_fit_lda_cohort_makes_the_recogniser_as_norm_its_scores(
    trained_run, speech_corpus, tmp_path
):
    """With --cohort the run carries its speakers' mean embeddings; torch and ONNX
    recognisers AS-norm verify/identify scores against them, and calibrate does the same."""
    import shutil

    from voxid.inference.recognizer import DEFAULT_ASNORM_THRESHOLD, Recognizer
    from voxid.inference.scoring import as_norm

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    store = trained_run.parent / "store.h5"
    rep = json.loads(run("fit-lda", str(run_dir), "--data", str(store), "--cohort", "--json"))
    assert rep["cohort_size"] == 4 and rep["dim"] == 3
    onnx = tmp_path / "m.onnx"
    run("export", str(run_dir), "--onnx", str(onnx))
    files = sorted((speech_corpus / "bruno").glob("*.wav"))
    recs = [Recognizer.load(p, tmp_path / f"{p.suffix[1:] or 'run'}.db") for p in (run_dir, onnx)]
    for rec in recs:
        assert rec.backend.cohort.shape == (4, 3)
        assert rec.threshold == DEFAULT_ASNORM_THRESHOLD
        assert rec.score_bounds == (DEFAULT_ASNORM_THRESHOLD - 4, DEFAULT_ASNORM_THRESHOLD + 4)
        rec.enroll("bruno", files[:2])
        ref = rec.embed_many(files[:2]).mean(axis=0)
        ref /= np.linalg.norm(ref)
        probe = rec.embed(files[3])
        expected = as_norm(probe[None] @ ref[None].T, probe[None], ref[None], rec.backend.cohort)
        v = rec.verify("bruno", files[3])
        assert v.score == pytest.approx(float(expected[0, 0]), abs=1e-4)
        assert rec.identify(files[3]).score == pytest.approx(v.score, abs=1e-6)
    np.testing.assert_allclose(recs[1].backend.cohort, recs[0].backend.cohort, atol=1e-6)
    assert recs[1].verify("bruno", files[3]).score == pytest.approx(
        recs[0].verify("bruno", files[3]).score, abs=1e-3
    )

    cal = json.loads(
        run("calibrate", str(run_dir), "--data", str(store), "--split", "train", "--eer", "--json")
    )
    assert cal["kind"] == "asnorm:eer"
    assert Recognizer.load(run_dir, None).threshold == pytest.approx(cal["threshold"])
    # refitting without a cohort leaves plain cosine scores, and clears that threshold
    rep = json.loads(run("fit-lda", str(run_dir), "--data", str(store), "--no-cohort", "--json"))
    assert rep["cohort_size"] == 0 and rep["cleared_threshold"] == pytest.approx(cal["threshold"])
    plain = Recognizer.load(run_dir, None)
    assert plain.backend.cohort is None and plain.score_bounds == (-1.0, 1.0)


def _registry_with(path, *names: str, fingerprint: str = "fp-test"):
    from voxid.inference.registry import Registry

    reg = Registry(path, fingerprint)
    for i, name in enumerate(names):
        reg.add(name, np.eye(4, dtype=np.float32)[i : i + 1])
    reg.close()
    return path


def _names(path) -> list[str]:
    from voxid.inference.registry import Registry

    return Registry(path, None).names()


def test_speakers_group_registry_reaches_its_subcommands(model, tmp_path, monkeypatch):
    """`speakers -r team.db remove/list` works on team.db, never on ./speakers.db."""
    monkeypatch.chdir(tmp_path)
    local = _registry_with(tmp_path / "speakers.db", "alice", "bob")
    from voxid.inference.recognizer import Recognizer

    fingerprint = Recognizer.load(model, None).model_fingerprint
    team = _registry_with(tmp_path / "team.db", "alice", "carol", fingerprint=fingerprint)
    other = _registry_with(tmp_path / "other.db", "dora")
    env = {"VOXID_REGISTRY": str(local)}

    out = json.loads(run("speakers", "-r", str(team), "remove", "alice", "--json", env=env))
    assert out == {"removed": "alice", "registry": str(team)}
    assert _names(team) == ["carol"] and _names(local) == ["alice", "bob"]

    listed = json.loads(run("speakers", "-r", str(team), "list", "--json", env=env))
    assert [s["name"] for s in listed] == ["carol"]
    listed = json.loads(run("speakers", "--registry", str(team), "--json", env=env))
    assert [s["name"] for s in listed] == ["carol"]
    # The subcommand's own option still wins over the group's.
    listed = json.loads(run("speakers", "-r", str(team), "list", "-r", str(other), "--json"))
    assert [s["name"] for s in listed] == ["dora"]
    run("speakers", "-r", str(team), "remove", "dora", "-r", str(other))
    assert _names(other) == [] and _names(team) == ["carol"]
    # -m and --include-training on the group reach `list` too: training speakers are added.
    args = ("speakers", "-m", str(model), "-r", str(team), "--include-training", "list")
    listed = json.loads(run(*args, "--json"))
    assert {s["name"] for s in listed if s["source"] == "enrolled"} == {"carol"}
    assert {s["source"] for s in listed} == {"enrolled", "training"}


def test_read_only_commands_never_create_a_registry(model, tmp_path, speech_wav, monkeypatch):
    """A mistyped -r (or $VOXID_REGISTRY) is an error, not a new empty registry and an
    answer from the training speakers; only enroll creates one."""
    monkeypatch.chdir(tmp_path)
    typo = tmp_path / "tpyo" / "team.db"
    env = {**os.environ, "VOXID_MODEL": str(model)}
    env.pop("VOXID_REGISTRY", None)
    for args in (
        ["identify", str(speech_wav), "-r", str(typo)],
        ["verify", "tr_a", str(speech_wav), "--registry", str(typo)],
        ["speakers", "list", "-r", str(typo)],
        ["speakers", "-r", str(typo), "list", "-m", str(model)],
        ["speakers", "-r", str(typo), "remove", "tr_a"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "voxid", *args], capture_output=True, text=True, env=env
        )
        assert proc.returncode == 1, (args, proc.stdout)
        assert proc.stderr.strip() == f"error: {typo}: no such registry", args
    proc = subprocess.run(
        [sys.executable, "-m", "voxid", "identify", str(speech_wav), "--json"],
        capture_output=True,
        text=True,
        env={**env, "VOXID_REGISTRY": str(typo)},
    )
    assert proc.returncode == 1 and proc.stderr.strip() == f"error: {typo}: no such registry"
    assert not typo.parent.exists()
    # The default ./speakers.db, not named by anyone: missing means nobody enrolled yet.
    args = ("--include-training", "--json", "-m", str(model))
    ident = json.loads(run("identify", str(speech_wav), *args))
    assert ident[str(speech_wav)]["candidates"][0]["name"].startswith("tr_")
    listed = json.loads(run("speakers", "list", *args))
    assert {s["source"] for s in listed} == {"training"}
    assert not (tmp_path / "speakers.db").exists()
    out = json.loads(
        run("enroll", "alice", str(speech_wav), "-m", str(model), "-r", str(typo), "--json")
    )
    assert out["registry"] == str(typo) and typo.is_file()


def test_foreign_sqlite_registry_is_one_line_error(model, tmp_path, speech_wav):
    import sqlite3

    foreign = tmp_path / "crm.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE speakers (id INTEGER PRIMARY KEY, who TEXT)")
    con.commit()
    con.close()
    for args in (
        ["speakers", "list", "-r", str(foreign)],
        ["identify", str(speech_wav), "-m", str(model), "-r", str(foreign)],
        ["enroll", "alice", str(speech_wav), "-m", str(model), "-r", str(foreign)],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "voxid", *args], capture_output=True, text=True
        )
        assert proc.returncode == 1, args
        assert proc.stderr.strip() == f"error: {foreign}: not a voxid registry (no meta table)"


def test_fit_lda_adapt_bends_a_fitted_projection_to_new_speakers(trained_run, speech_wav, tmp_path):
    """--adapt needs an LDA, keeps its size, grows the cohort by the store's speakers,
    records what it adapted to, clears the threshold; weight 0 changes no embedding, and an
    adapted model exports to ONNX like any other."""
    import shutil

    from voxid.checkpoint import load_checkpoint, save_threshold
    from voxid.errors import ModelError
    from voxid.inference.recognizer import Recognizer

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    store = trained_run.parent / "store.h5"
    with pytest.raises(ModelError, match="no LDA projection to adapt; fit one first"):
        run("fit-lda", str(run_dir), "--data", str(store), "--adapt", "0.2")
    refused = CliRunner().invoke(
        app, ["fit-lda", str(run_dir), "--data", str(store), "--adapt", "0.2", "--cohort"]
    )
    assert refused.exit_code == 2 and "no --dim or --cohort" in refused.output
    assert CliRunner().invoke(
        app, ["fit-lda", str(run_dir), "--data", str(store), "--adapt", "1.5"]
    ).exit_code == 2  # fmt: skip

    run("fit-lda", str(run_dir), "--data", str(store), "--cohort")
    before = Recognizer.load(run_dir, None).embed(speech_wav)
    save_threshold(run_dir, 2.5, "asnorm:far=0.01")
    rep = json.loads(run("fit-lda", str(run_dir), "--data", str(store), "--adapt", "0", "--json"))
    assert rep["dim"] == 3 and rep["cohort_size"] == 8 and rep["n_speakers"] == 4
    assert rep["cleared_threshold"] == pytest.approx(2.5)
    np.testing.assert_allclose(Recognizer.load(run_dir, None).embed(speech_wav), before, atol=1e-5)

    rep = json.loads(run("fit-lda", str(run_dir), "--data", str(store), "--adapt", "0.5", "--json"))
    assert rep["cohort_size"] == 12  # each adaptation adds the store's speakers again
    card, _ = load_checkpoint(run_dir / "best.ckpt")
    projection = card.scoring.projection or {}
    assert projection["cohort"] and projection["adapted"]["weight"] == 0.5
    assert projection["adapted"]["speakers"] == 4 and projection["split"] == "train"
    rec = Recognizer.load(run_dir, None)
    adapted = rec.embed(speech_wav)
    assert adapted.shape == (3,) and not np.allclose(adapted, before, atol=1e-3)
    assert rec.backend.cohort.shape == (12, 3)
    onnx = tmp_path / "m.onnx"
    run("export", str(run_dir), "--onnx", str(onnx))
    np.testing.assert_allclose(Recognizer.load(onnx, None).embed(speech_wav), adapted, atol=1e-4)
