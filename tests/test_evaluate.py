"""voxid.evaluation end to end on a real espeak-ng store, and its parts on constructed data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from voxid.errors import ConfigError, DataError, ModelError, VoxidError
from voxid.evaluation import EvalOptions, evaluate, plots, verification

TINY_CRNN = {
    "conv_channels": (4, 8, 8),
    "gru_hidden": 16,
    "gru_layers": 1,
    "attention_channels": 8,
    "mlp_hidden": 32,
    "embedding_dim": 16,
}


def _split(sentence: int) -> str:
    # 8 sentences per voice: 3 train (also the AS-norm cohort), 2 enrol, 3 test.
    return "train" if sentence < 3 else "enroll" if sentence < 5 else "test"


@pytest.fixture(scope="module")
def store(speech_corpus, tmp_path_factory) -> Path:
    from voxid.data.corpus import Corpus, CorpusItem
    from voxid.data.prepare import PrepareConfig, prepare

    items = []
    for folder in sorted(p for p in speech_corpus.iterdir() if p.is_dir()):
        for k, wav in enumerate(sorted(folder.glob("*.wav"))):
            items.append(CorpusItem(wav, folder.name, _split(k)))
    out = tmp_path_factory.mktemp("store") / "store.h5"
    prepare(Corpus(items, root=speech_corpus), out, PrepareConfig(), workers=1)
    return out


@pytest.fixture(scope="module")
def speakers(store) -> list[str]:
    from voxid.data.store import StoreInfo

    return list(StoreInfo.open(store).speakers)


def _save(model, path: Path, labels: list[str], **meta) -> Path:
    from voxid.checkpoint import make_meta, save_inference_file

    return save_inference_file(path, model, make_meta(model, labels, **meta))


@pytest.fixture(scope="module")
def crnn_ckpt(speakers, tmp_path_factory) -> Path:
    """An untrained tiny crnn that knows 3 of the 4 speakers (the 4th is never seen)."""
    from voxid.models import build_model

    torch.manual_seed(0)
    labels = speakers[:3]
    model = build_model("crnn", n_classes=len(labels), **TINY_CRNN).eval()
    return _save(model, tmp_path_factory.mktemp("run") / "model.pt", labels)


def _direct_predictions(ckpt: Path, store: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Class scores straight from the model, item by item: an independent path."""
    from voxid.checkpoint import load_checkpoint
    from voxid.data.loader import StoreDataset

    _, model = load_checkpoint(ckpt)
    ds = StoreDataset(store, split, include_augmented=False)
    with torch.inference_mode():
        scores = np.concatenate([model(ds[i][0][None]).numpy() for i in range(len(ds))])
    names = np.array(ds.info.speakers)[ds.labels]
    return scores, names


@pytest.fixture(scope="module")
def ident(crnn_ckpt, store, tmp_path_factory) -> tuple[dict, Path]:
    """One identification run with MC dropout, shared by the tests that read its report."""
    out = tmp_path_factory.mktemp("ident")
    return evaluate(crnn_ckpt, store, out, EvalOptions(split="test", mc_samples=4)), out


def test_pseudo_voices_are_out_of_the_closed_set(crnn_ckpt, store, speakers, tmp_path):
    """Classes of speaker-augmented copies (`<speaker>@speed_0.9`) are never an answer."""
    from voxid.data.loader import StoreDataset
    from voxid.evaluation.identification import pseudo_voices

    labels = [*speakers[:3], *(f"{s}@speed_0.9" for s in speakers[:3])]
    assert pseudo_voices([*labels, "a@b", "x@speed_0.9"]).tolist() == [False] * 3 + [True] * 3 + [
        False,
        False,
    ]
    from voxid.models import build_model

    torch.manual_seed(0)
    model = build_model("crnn", n_classes=len(labels), **TINY_CRNN).eval()
    ds = StoreDataset(store, "test", include_augmented=False)
    with torch.inference_mode():
        emb = torch.cat([model.embed(ds[i][0][None]) for i in range(len(ds))])
        # Every pseudo-voice at the test clips' mean direction: unmasked, they would win.
        model.head.weight[3:] = emb.mean(0)
        scores = model.head(emb).numpy()
    assert (scores.argmax(1) >= 3).mean() > 0.5
    ckpt = _save(model.eval(), tmp_path / "model.pt", labels)
    rep = evaluate(ckpt, store, tmp_path / "ev", EvalOptions(split="test", mc_samples=2))
    ident = rep["identification"]
    assert ident["pseudo_voices_excluded"] == 3
    names = np.array(ds.info.speakers)[ds.labels]
    known = names != speakers[3]
    y = np.array([speakers.index(n) for n in names[known]])
    pred = scores[known, :3].argmax(axis=1)
    assert ident["chunk"]["top1_accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-9)
    predicted = {r["name"] for r in ident["chunk"]["per_speaker"] if r["predicted"]}
    assert predicted <= set(speakers[:3])
    assert all("@" not in u for u in ident["unseen_speakers"][0]["predicted_as"])
    assert rep["uncertainty"]["n"] == ident["chunk"]["n"]


def test_identification_report(ident, crnn_ckpt, store, speakers):
    rep, tmp_path = ident
    scores, names = _direct_predictions(crnn_ckpt, store, "test")
    known = names != speakers[3]
    y = np.array([speakers.index(n) for n in names[known]])
    pred = scores[known].argmax(axis=1)
    ident = rep["identification"]
    assert ident["chunk"]["n"] == known.sum()
    assert ident["chunk"]["top1_accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-9)
    assert rep["summary"]["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert [u["name"] for u in ident["unseen_speakers"]] == [speakers[3]]
    assert ident["unseen_speakers"][0]["items"] == (~known).sum()
    assert ident["file"]["n"] == 3 * 3  # three test sentences of each known speaker
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["summary"] == pytest.approx(rep["summary"])
    rows = (tmp_path / "confusion_chunk.csv").read_text().splitlines()
    assert sum(sum(map(int, r.split(",")[1:])) for r in rows[1:]) == known.sum()
    md = (tmp_path / "report.md").read_text()
    assert speakers[3] in md and "confusion_chunk.png" in md
    assert (tmp_path / "confusion_chunk.png").stat().st_size > 1000
    assert rep["speed"]["x_real_time"] > 0


def test_authentication_report(speakers, store, tmp_path):
    from voxid.models import build_model

    torch.manual_seed(1)
    model = build_model("crnn", n_classes=2, **TINY_CRNN).eval()
    ckpt = _save(model, tmp_path / "auth.pt", ["outsider", "member"], mode="authenticate",
                 members=[speakers[0]], threshold=0.5, threshold_kind="probability",
                 train_speakers=speakers[:2])  # fmt: skip
    rep = evaluate(ckpt, store, tmp_path / "report", EvalOptions(split="test"))
    scores, names = _direct_predictions(ckpt, store, "test")
    p_member = torch.softmax(torch.from_numpy(scores), 1)[:, 1].numpy()
    chunk = rep["authentication"]["chunk"]
    seen, unseen = names == speakers[1], np.isin(names, speakers[2:])
    assert chunk["far_seen"] == pytest.approx(np.mean(p_member[seen] >= 0.5))
    assert chunk["far_unseen"] == pytest.approx(np.mean(p_member[unseen] >= 0.5))
    assert chunk["frr"] == pytest.approx(np.mean(p_member[names == speakers[0]] < 0.5))
    counts = chunk["confusion"]["counts"]
    assert sum(map(sum, counts)) == len(names)
    assert chunk["n_outsider_unseen"] == unseen.sum()
    assert set(rep["authentication"]["chunk"]["min_dcf"]) == {"0.01", "0.001"}
    assert (tmp_path / "report" / "det_roc_chunk.png").is_file()


def test_authentication_report_by_speaker_cosine(speakers, store, tmp_path):
    from voxid.models import build_model

    torch.manual_seed(2)
    labels = speakers[:3]  # speakers[0] is the member, 1-2 seen outsiders, 3 never seen
    model = build_model("crnn", n_classes=3, **TINY_CRNN).eval()
    ckpt = _save(model, tmp_path / "auth.pt", labels, mode="authenticate",
                 members=[speakers[0]], auth_scoring="speakers", threshold=0.2,
                 threshold_kind="member_cosine", train_speakers=labels)  # fmt: skip
    rep = evaluate(ckpt, store, tmp_path / "report", EvalOptions(split="test"))
    # Independently: cosine of each item's embedding with the member's class weight.
    from voxid.data.loader import StoreDataset

    ds = StoreDataset(store, "test", include_augmented=False)
    with torch.inference_mode():
        emb = torch.cat([model.encoder(ds[i][0][None]) for i in range(len(ds))])
    cos = torch.nn.functional.cosine_similarity(emb, model.head.weight[0][None]).detach().numpy()
    names = np.array(ds.info.speakers)[ds.labels]
    chunk = rep["authentication"]["chunk"]
    assert rep["authentication"]["score"].startswith("highest cosine")
    member = names == speakers[0]
    assert chunk["frr"] == pytest.approx(np.mean(cos[member] < 0.2))
    assert chunk["far_unseen"] == pytest.approx(np.mean(cos[names == speakers[3]] >= 0.2))
    assert chunk["far"] == pytest.approx(np.mean(cos[~member] >= 0.2))
    at = chunk["at_frr"]  # the operating point that lets 98 % of the member's items in
    assert at["frr"] <= 0.02 and at["target_frr"] == 0.02
    assert at["far_unseen"] == pytest.approx(np.mean(cos[names == speakers[3]] >= at["threshold"]))
    assert rep["summary"]["far_unseen_at_frr_0.02"] == at["far_unseen"]
    assert "authentication_asnorm" not in rep  # no cohort named, none in the model

    # With a cohort (the train split's files), each cosine to a member is AS-normed.
    from voxid import metrics
    from voxid.inference.scoring import as_norm

    opts = EvalOptions(split="test", cohort_split="train", asnorm_top=5)
    normed_rep = evaluate(ckpt, store, tmp_path / "asnorm", opts)
    train = StoreDataset(store, "train", include_augmented=False)
    with torch.inference_mode():
        temb = torch.cat([model.encoder(train[i][0][None]) for i in range(len(train))])
    sources = train.items["source"].astype(str)
    cohort = np.stack([temb[sources == f].mean(0).numpy() for f in dict.fromkeys(sources)])
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    unit = torch.nn.functional.normalize(emb, dim=1).numpy()
    w = torch.nn.functional.normalize(model.head.weight[:1], dim=1).detach().numpy()
    normed = as_norm(unit @ w.T, unit, w, cohort, 5)[:, 0]
    assert not np.allclose(normed, cos)
    section = normed_rep["authentication_asnorm"]
    assert section["score"].startswith("highest AS-normed cosine")
    # The checkpoint's threshold was set for plain cosines: not applied to normed scores.
    assert section["threshold_source"].startswith("eer of this test set")
    expected = metrics.eer(normed[member], normed[~member])[0]
    assert normed_rep["summary"]["asnorm_eer"] == pytest.approx(expected, abs=1e-6)
    at = section["chunk"]["at_frr"]
    unseen = normed[names == speakers[3]]
    assert normed_rep["summary"]["asnorm_far_unseen_at_frr_0.02"] == pytest.approx(
        np.mean(unseen >= at["threshold"])
    )
    assert normed_rep["authentication"] == rep["authentication"]  # the plain scores stay


def test_verification_from_store_with_asnorm(crnn_ckpt, store, tmp_path):
    opts = EvalOptions(verify=True, enroll_split="enroll", test_split="test",
                       cohort_split="train", asnorm_top=5)  # fmt: skip
    rep = evaluate(crnn_ckpt, store, tmp_path, opts)
    v = rep["verification"]
    n_test_items = rep["data"]["test_items"]
    assert rep["data"]["enrolled_speakers"] == 4
    assert v["chunk"]["cosine"]["n_target"] == n_test_items
    assert v["chunk"]["cosine"]["n_nontarget"] == 3 * n_test_items
    assert v["file"]["cosine"]["n_target"] == 4 * 3
    assert "asnorm" in v["file"] and v["cohort_size"] == 4 * 3
    assert 0 <= rep["summary"]["eer"] <= 0.5
    assert (tmp_path / "scores_asnorm_file.png").is_file()


def test_verification_pairs_and_first_files_enrolment(crnn_ckpt, store, tmp_path):
    rep = evaluate(crnn_ckpt, store, tmp_path, EvalOptions(verify=True, split="test",
                                                           n_enroll=1))  # fmt: skip
    assert rep["data"]["enroll_files"] == 4  # one file per speaker
    pairs = evaluate(
        crnn_ckpt,
        store,
        tmp_path / "p",
        EvalOptions(verify=True, split="test", trial_mode="pairs", max_trials=20),
    )
    f = pairs["verification"]["file"]
    assert f["cosine"]["n_target"] + f["cosine"]["n_nontarget"] == 20
    assert f["pairs_total"] == 12 * 11 // 2 and f["sampled"]


def test_verification_trial_list(crnn_ckpt, speech_corpus, tmp_path):
    wavs = {p.parent.name: sorted(p.parent.glob("*.wav")) for p in speech_corpus.glob("*/*.wav")}
    a, b = sorted(wavs)[:2]
    rel = lambda p: p.relative_to(speech_corpus).as_posix()  # noqa: E731
    lines = [
        f"1 {rel(wavs[a][0])} {rel(wavs[a][1])}",
        f"0 {rel(wavs[a][0])} {rel(wavs[b][0])}",
        f"1 {rel(wavs[b][0])} {rel(wavs[b][2])}",
        "0 missing.wav " + rel(wavs[b][1]),
    ]
    trials = tmp_path / "trials.txt"
    trials.write_text("\n".join(lines) + "\n")
    opts = EvalOptions(verify=True, trials=trials, audio_root=speech_corpus)
    rep = evaluate(crnn_ckpt, None, tmp_path / "r", opts)
    f = rep["verification"]["file"]
    assert f["trials_scored"] == 3 and f["files_skipped"] == 1
    assert rep["data"]["skipped"][0]["path"].endswith("missing.wav")


def test_mc_dropout_uncertainty(ident):
    rep, tmp_path = ident
    u = rep["uncertainty"]
    assert u["mc_samples"] == 4 and u["n"] == rep["identification"]["chunk"]["n"]
    assert 0 <= u["ece_mc"] <= 1 and 0 <= u["mean_entropy"] <= np.log(3) + 1e-9
    assert u["mean_std"] > 0  # dropout is really sampling
    assert "unseen_mean_entropy" in u
    rows = (tmp_path / "uncertainty.csv").read_text().splitlines()
    assert len(rows) == u["n"] + 1
    assert (tmp_path / "reliability.png").is_file()


def test_gmm_run_is_evaluated(store, speakers, tmp_path):
    from voxid.data.loader import StoreDataset
    from voxid.models.gmm import GmmClassifier

    ds = StoreDataset(store, "train", include_augmented=False)
    feats = [ds[i][0].numpy() for i in range(len(ds))]
    clf = GmmClassifier(n_components=2, max_iter=20).fit(feats, ds.labels)
    run = tmp_path / "gmm"
    run.mkdir()
    clf.save(run / "model.npz")
    meta = {
        "model_name": "gmm",
        "labels": speakers,
        "mode": "identify",
        "hparams": {},
        "feature_config": ds.info.feature_config.to_dict(),
        "train_speakers": speakers,
    }
    (run / "model.json").write_text(json.dumps(meta))
    rep = evaluate(run, store, tmp_path / "r", EvalOptions())
    test = StoreDataset(store, "test", include_augmented=False)
    scores = clf.predict_scores([test[i][0].numpy() for i in range(len(test))])
    assert rep["identification"]["chunk"]["top1_accuracy"] == pytest.approx(
        np.mean(scores.argmax(1) == test.labels)
    )
    with pytest.raises(ModelError):
        evaluate(run, store, tmp_path / "v", EvalOptions(verify=True))


def test_bad_inputs(crnn_ckpt, store, tmp_path):
    with pytest.raises(VoxidError):
        evaluate(tmp_path / "nope.pt", store, tmp_path, EvalOptions())
    with pytest.raises(ConfigError):
        evaluate(crnn_ckpt, store, tmp_path, EvalOptions(trials=tmp_path / "t.txt"))
    with pytest.raises(DataError):
        evaluate(crnn_ckpt, store, tmp_path, EvalOptions(split="nosuchsplit"))
    with pytest.raises(ConfigError):
        EvalOptions(mc_samples=1).check()
    assert not (tmp_path / "report.json").exists()


def test_cli_evaluate_and_compare(ident, crnn_ckpt, store, tmp_path):
    from typer.testing import CliRunner

    from voxid.cli import app

    runner = CliRunner()
    args = ["evaluate", str(crnn_ckpt), "--data", str(store), "-o", str(tmp_path), "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["top1_accuracy"] == ident[0]["summary"]["top1_accuracy"]
    res = runner.invoke(app, ["compare", str(ident[1]), str(tmp_path / "report.json")])
    assert res.exit_code == 0, res.output
    assert "top1_accuracy" in res.output and "ece_mc" in res.output
    res = runner.invoke(app, ["compare", str(tmp_path / "missing")])
    assert res.exit_code != 0 and isinstance(res.exception, DataError)


def test_pair_index_matches_triu():
    for n in (2, 3, 7, 50):
        i, j = np.triu_indices(n, k=1)
        got = verification._pair_index(np.arange(n * (n - 1) // 2), n)
        np.testing.assert_array_equal(got[0], i)
        np.testing.assert_array_equal(got[1], j)


def test_speaker_trials_and_asnorm_on_constructed_embeddings():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 32))
    names = np.repeat(np.array(list("abcde")), 6)
    emb = centres[np.repeat(np.arange(5), 6)] + 0.3 * rng.normal(size=(30, 32))
    sources = np.array(
        [f"{n}{k // 2}" for n, k in zip(names, np.tile(np.arange(6), 5), strict=True)]
    )
    enrol, test = verification.split_enrol_test(names, sources, 1)
    spk, models = verification.enrol_speakers(emb[enrol], names[enrol], sources[enrol], None)
    cohort = rng.normal(size=(40, 32))
    levels = verification.speaker_trials(emb[test], names[test], sources[test], spk, models,
                                         cohort, top_n=10)  # fmt: skip
    rep = verification.verification_report(levels)
    assert rep["chunk"]["cosine"]["n_target"] == 20 and rep["file"]["cosine"]["n_target"] == 10
    assert rep["chunk"]["cosine"]["eer"] == 0.0  # well-separated speakers
    assert rep["chunk"]["asnorm"]["eer"] == 0.0
    assert levels["chunk"].norm_tar.min() > levels["chunk"].norm_non.max()
    at = verification.verification_report(levels, 0.5)["file"]["cosine"]["stored_threshold"]
    ts = levels["file"]
    assert at["far"] == np.mean(ts.non >= 0.5) and at["frr"] == np.mean(ts.tar < 0.5)


def test_confusion_png_scales_with_speakers(tmp_path):
    from PIL import Image

    sizes = []
    for n in (5, 60):
        cm = np.diag(np.full(n, 10)) + np.random.default_rng(n).integers(0, 2, (n, n))
        names = [f"{k:08d}" for k in range(n)]
        path = plots.confusion_png(cm, names, tmp_path / f"cm{n}.png")
        sizes.append(Image.open(path).size)
    assert sizes[1][0] > 2 * sizes[0][0]  # 60 speakers get a larger canvas, not tiny cells


@pytest.mark.slow
@pytest.mark.shared_data
def test_protocol_pc_trial_counts_on_asc30(shared_data, crnn_ckpt, tmp_path):
    """P-C on real speech (10 of the 40 keywords, to stay quick): enrol the held-back
    speakers on takes 01-03, test every take-04 clip against every one of them."""
    from voxid.data import assign_splits, load_corpus
    from voxid.data.corpus import Corpus
    from voxid.data.prepare import PrepareConfig, prepare

    corpus = load_corpus(shared_data / "asc30")
    keywords = sorted({it.extra["keyword"] for it in corpus.items})[:10]
    items = [it for it in corpus.items if it.extra["keyword"] in keywords]
    corpus = assign_splits(Corpus(items, root=corpus.root), rule="take:01,02,03=enroll;04=test")
    prepare(corpus, tmp_path / "asc30.h5", PrepareConfig(), workers=2)
    opts = EvalOptions(verify=True, speakers="00000021-00000030", enroll_split="enroll")
    rep = evaluate(crnn_ckpt, tmp_path / "asc30.h5", tmp_path / "r", opts)
    assert rep["data"]["enrolled_speakers"] == 10 and rep["data"]["enroll_files"] == 300
    cos = rep["verification"]["file"]["cosine"]
    assert (cos["n_target"], cos["n_nontarget"]) == (100, 900)
    assert 0.0 <= cos["eer"] <= 0.5 and 0.0 <= cos["min_dcf"]["0.01"] <= 1.0


@pytest.mark.slow
def test_trained_run_agrees_with_the_trainers_test_metrics(trained_run, tmp_path):
    """Two inference paths (Lightning-free evaluation vs the trainer's final scoring) must
    give the same numbers on the same split; a trained model beats chance by far."""
    store = trained_run.parent / "store.h5"
    rep = evaluate(trained_run, store, tmp_path, EvalOptions(split="test"))
    trainer = json.loads((trained_run / "metrics.json").read_text())["test"]
    chunk = rep["identification"]["chunk"]
    assert chunk["n"] == trainer["n"]
    assert chunk["top1_accuracy"] == pytest.approx(trainer["top1"], abs=1e-9)
    assert chunk["macro"]["f1"] == pytest.approx(trainer["macro_f1"], abs=1e-9)
    assert chunk["top1_accuracy"] > 0.5  # four speakers: chance is 0.25
    assert rep["identification"]["unseen_speakers"] == []


def test_confusion_figure_labels_colour_bar_and_row_counts():
    cm = np.array([[8, 2, 0], [1, 1, 0], [0, 0, 5]])
    fig = plots.confusion_figure(cm, ["ann", "bob", "cy"])
    ax, bar = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ann (10)", "bob (2)", "cy (5)"]
    assert bar.get_ylabel() == "share of the true speaker's items"
    counts = plots.confusion_figure(cm, ["ann", "bob", "cy"], normalize=False)
    assert counts.axes[1].get_ylabel() == "items"


def test_det_eer_marker_lies_on_the_drawn_curve():
    # Few trials: a stepped DET whose convex-hull EER point is off the steps.
    rng = np.random.default_rng(3)
    tar, non = rng.normal(1.0, 1.0, 7), rng.normal(0.0, 1.0, 11)
    fig = plots.det_roc_figure(tar, non)
    curve, marker = fig.axes[0].get_lines()[:2]
    x, y = curve.get_xdata(), curve.get_ydata()
    (mx,), (my,) = marker.get_xdata(), marker.get_ydata()
    # distance from the marker to the nearest segment of the polyline
    p0, p1 = np.c_[x[:-1], y[:-1]], np.c_[x[1:], y[1:]]
    seg = p1 - p0
    t = np.clip(((np.array([mx, my]) - p0) * seg).sum(1) / np.maximum((seg**2).sum(1), 1e-12), 0, 1)
    gap = np.hypot(*(p0 + t[:, None] * seg - [mx, my]).T).min()
    assert gap < 1e-6 and abs(mx - my) < 1e-6


def test_score_histogram_marks_the_calibrated_threshold():
    tar, non = np.linspace(0.4, 0.9, 30), np.linspace(-0.2, 0.5, 60)
    fig = plots.histogram_figure(tar, non, threshold=0.45, calibrated=0.62)
    lines = {ln.get_label(): ln.get_xdata()[0] for ln in fig.axes[0].get_lines()}
    assert lines["calibrated threshold 0.620"] == 0.62 and lines["threshold 0.450"] == 0.45
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "calibrated threshold 0.620" in legend
