"""Peer rows for the protocol tables, measured here: Resemblyzer and the MFCC + GMM baseline.

Resemblyzer (a GE2E encoder trained on thousands of speakers; its weights ship inside the
pip package, nothing is downloaded) embeds every asc30 clip once with its own
preprocessing; each protocol then scores those embeddings the way it scores ours:
- P-A: nearest centroid, each speaker's mean unit embedding of takes 01-03;
- P-B: a clip's score is its best cosine to a member's centroid (takes 01-03 of 01-05);
  the threshold lets 1 % of the seen outsiders' takes 01-03 through, as voxid's threshold
  is chosen on validation outsiders;
- P-C: each of 00000021-00000030 enrolled with the mean of its takes 01-03, every take-04
  clip scored against every one (4,000 trials).
No training: the pretrained encoder is the peer the issues quote (85.9 % and 13.3 %).

The GMM baseline (P-A measures it through `voxid train gmm`) verifies here as a classical
system would: voxid's MFCC front-end (20 + deltas + delta-deltas, mean-normalised), one
16-component diagonal GMM per enrolled speaker fitted on its takes 01-03, and a clip's
mean frame log-likelihood under a speaker normalised by those under a cohort of other
speakers' GMMs (mean and spread; the test-side normalisation the issue's 9.8 % used):
asc30 00000001-00000020 for P-C, the seen outsiders 00000006-00000020 for P-B.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np

from voxid import metrics
from voxid.evaluation.common import l2_normalize
from voxid.inference.registry import mean_embedding
from voxid.inference.scoring import as_norm

PEER = "resemblyzer"
MEMBERS = {f"{i:08d}" for i in range(1, 6)}
SEEN = {f"{i:08d}" for i in range(6, 21)}
UNSEEN = {f"{i:08d}" for i in range(21, 31)}


def available() -> bool:
    """Whether Resemblyzer is installed (`make bench` installs it)."""
    try:
        import resemblyzer  # noqa: F401
    except ImportError:
        return False
    return True


def embeddings(data: Path, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit Resemblyzer embeddings of every asc30 clip, with speakers and takes (cached)."""
    if cache.exists():
        z = np.load(cache)
        return z["emb"], z["speaker"], z["take"]
    from resemblyzer import VoiceEncoder, preprocess_wav

    rows = _manifest(data)
    enc = VoiceEncoder("cpu", verbose=False)
    emb = np.stack([enc.embed_utterance(preprocess_wav(data / "asc30" / r["path"])) for r in rows])
    speaker = np.array([r["speaker"] for r in rows])
    take = np.array([r["take"] for r in rows])
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, emb=emb, speaker=speaker, take=take)
    tmp.replace(cache)
    return emb, speaker, take


def _manifest(data: Path) -> list[dict[str, str]]:
    with open(data / "asc30" / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _centroids(emb: np.ndarray, speaker: np.ndarray, names: list[str], mask: np.ndarray):
    """Each named speaker's enrolment as the recogniser makes it (`mean_embedding`)."""
    return np.stack([mean_embedding(emb[mask & (speaker == s)]) for s in names])


def _scores(emb: np.ndarray, cents: np.ndarray, cohort: np.ndarray | None) -> np.ndarray:
    """Cosine of every clip against every centroid, AS-normed against `cohort` if given
    (as the recogniser scores a model fitted with `voxid fit-lda --cohort`)."""
    scores = l2_normalize(emb) @ cents.T
    return scores if cohort is None else as_norm(scores, l2_normalize(emb), cents, cohort)


def pa_row(
    emb: np.ndarray,
    speaker: np.ndarray,
    take: np.ndarray,
    label: str = f"{PEER} (pretrained, nearest centroid)",
    cohort: np.ndarray | None = None,
) -> dict:
    """P-A: nearest centroid of takes 01-03, tested on take 04."""
    names = sorted(set(speaker))
    cents = _centroids(emb, speaker, names, take != "04")
    test = take == "04"
    scores = _scores(emb[test], cents, cohort)
    y = np.array([names.index(s) for s in speaker[test]])
    report = metrics.classification_report(y, scores.argmax(1), labels=range(len(names)))
    return {
        "model": label,
        "top1": report["accuracy"],
        "top5": metrics.topk_accuracy(scores, y, 5),
        "macro_f1": report["macro"]["f1"],
    }


def pb_row(
    emb: np.ndarray,
    speaker: np.ndarray,
    take: np.ndarray,
    label: str = f"{PEER} (pretrained, cosine to members)",
    cohort: np.ndarray | None = None,
) -> dict:
    """P-B: best score to a member centroid (takes 01-03 of the members)."""
    members = sorted(MEMBERS)
    cents = _centroids(emb, speaker, members, take != "04")
    score = _scores(emb, cents, cohort).max(1)
    return {"model": label, **_auth_row(score, speaker, take)}


def _auth_row(score: np.ndarray, speaker: np.ndarray, take: np.ndarray) -> dict:
    """P-B figures of one score per clip; threshold at 1 % FAR on seen outsiders' takes 01-03."""
    test = take == "04"
    tar = score[test & np.isin(speaker, sorted(MEMBERS))]
    seen = score[test & np.isin(speaker, sorted(SEEN))]
    unseen = score[test & np.isin(speaker, sorted(UNSEEN))]
    non = np.concatenate([seen, unseen])
    thr = metrics.threshold_at_far(score[(take != "04") & np.isin(speaker, sorted(SEEN))], 0.01)
    far_seen, frr = metrics.far_frr(tar, seen, thr)
    far, _ = metrics.far_frr(tar, non, thr)
    at_frr_2 = metrics.threshold_at_frr(tar, 0.02)
    return {
        "eer": metrics.eer(tar, non)[0],
        "far": far,
        "far_seen": far_seen,
        "far_unseen": metrics.far_frr(tar, unseen, thr)[0],
        "frr": frr,
        "accuracy": float(np.sum(tar >= thr) + np.sum(non < thr)) / (len(tar) + len(non)),
        "far_unseen_at_frr_0.02": metrics.far_frr(tar, unseen, at_frr_2)[0],
        "threshold": thr,
    }


def pc_row(emb: np.ndarray, speaker: np.ndarray, take: np.ndarray) -> dict:
    """P-C: the ten held-back speakers, enrolled on takes 01-03, 4,000 cosine trials."""
    names = sorted(UNSEEN)
    cents = _centroids(emb, speaker, names, take != "04")
    test = (take == "04") & np.isin(speaker, names)
    scores = l2_normalize(emb[test]) @ cents.T
    return {"model": f"{PEER} (pretrained)", **_trials_row(scores, speaker[test], names)}


def _trials_row(scores: np.ndarray, speaker: np.ndarray, names: list[str]) -> dict:
    """EER and minDCF of every test clip (rows) against every enrolled speaker (columns)."""
    target = speaker[:, None] == np.array(names)[None, :]
    tar, non = scores[target], scores[~target]
    return {
        "eer": metrics.eer(tar, non)[0],
        "min_dcf_0.01": metrics.min_dcf(tar, non, 0.01),
        "trials": int(target.size),
        "targets": int(target.sum()),
    }


@lru_cache(maxsize=1)
def mfcc_features(data: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """voxid's MFCC frames `(T, 60)` of every asc30 clip, with speakers and takes (computed
    once per process: P-B and P-C both use them)."""
    import torch

    from voxid.audio import load_audio
    from voxid.features import FeatureConfig, build_frontend

    rows = _manifest(data)
    frontend = build_frontend(FeatureConfig.mfcc()).eval()
    feats = []
    with torch.no_grad():
        for r in rows:
            wav = torch.from_numpy(load_audio(data / "asc30" / r["path"], 16000))
            feats.append(frontend(wav[None])[0].numpy())
    return feats, np.array([r["speaker"] for r in rows]), np.array([r["take"] for r in rows])


def _gmm_scores(feats, speaker, take, enrolled: list[str], cohort: list[str]) -> np.ndarray:
    """Cohort-normalised log-likelihoods `(N clips, len(enrolled))` of every clip."""
    from voxid.models.gmm import GmmClassifier

    names = enrolled + cohort
    fit = [
        i for i, (s, t) in enumerate(zip(speaker, take, strict=True)) if s in names and t != "04"
    ]
    clf = GmmClassifier(n_components=16, seed=0, n_jobs=2)
    clf.fit([feats[i] for i in fit], speaker[fit])
    ll = clf.predict_scores(feats)
    col = {s: i for i, s in enumerate(clf.labels_)}
    own = ll[:, [col[s] for s in enrolled]]
    coh = ll[:, [col[s] for s in cohort]]
    return (own - coh.mean(1, keepdims=True)) / coh.std(1, keepdims=True)


def gmm_pb_row(feats, speaker: np.ndarray, take: np.ndarray) -> dict:
    """P-B for the GMM baseline: best normalised member score, cohort = seen outsiders."""
    score = _gmm_scores(feats, speaker, take, sorted(MEMBERS), sorted(SEEN)).max(1)
    return {"model": "gmm (MFCC, cohort-normalised)", **_auth_row(score, speaker, take)}


def gmm_pc_row(feats, speaker: np.ndarray, take: np.ndarray) -> dict:
    """P-C for the GMM baseline: 4,000 trials, cohort = asc30 00000001-00000020."""
    cohort = [f"{i:08d}" for i in range(1, 21)]
    names = sorted(UNSEEN)
    scores = _gmm_scores(feats, speaker, take, names, cohort)
    test = (take == "04") & np.isin(speaker, names)
    return {
        "model": "gmm (MFCC, cohort-normalised)",
        **_trials_row(scores[test], speaker[test], names),
    }
