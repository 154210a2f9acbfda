"""Authentication report (member vs outsider): FAR by kind of outsider, FRR, EER, minDCF.

A member trial is a test item of a speaker in the checkpoint's `members`; every other item
is an outsider trial, "seen" when the speaker is in the checkpoint's `train_speakers` and
"unseen" otherwise. Speakers are matched by name, never by the store's label index.
The score of an item is the model's probability of the member class (the binary head), or
the highest cosine between its embedding and a member's class weight (`auth_scoring:
speakers`); a trial is accepted when score >= threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voxid import metrics
from voxid.card import ModelCard
from voxid.errors import ModelError
from voxid.evaluation.common import first_by_group, group_sources, mean_by_group

P_TARGETS = (0.01, 0.001)
#: The operating point of the CNN-RNN report's question "how many outsiders get in when
#: almost every member does": FAR by kind of outsider at this FRR.
FRR_POINT = 0.02


def member_index(labels: list[str]) -> int:
    """Class index of the member class (``"member"`` by name, else the last class).

    >>> member_index(["outsider", "member"])
    1
    """
    if len(labels) != 2:
        raise ModelError(f"authentication needs a two-class model, this one has {len(labels)}")
    return labels.index("member") if "member" in labels else 1


def member_scores(
    probs: np.ndarray | None,
    embeddings: np.ndarray | None,
    card: ModelCard,
    class_weights: np.ndarray | None = None,
    cohort: np.ndarray | None = None,
    top_n: int = 100,
) -> np.ndarray:
    """Each item's member score, as the checkpoint's `auth_scoring` defines it; with a
    `cohort` (unit embeddings of other speakers, `auth_scoring: speakers` only) each cosine
    to a member is AS-normed against it before the highest is taken.

    >>> from voxid.card import ModelCard
    >>> card = ModelCard(auth_scoring="speakers", labels=("a", "b", "c"), members=("a", "c"))
    >>> w = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    >>> member_scores(None, np.array([[2.0, 0.0], [0.0, 3.0]]), card, w).round(3).tolist()
    [1.0, 0.0]
    """
    labels = list(card.labels)
    if card.auth_scoring != "speakers":
        if probs is None:
            raise ModelError("a binary authentication model needs its class probabilities")
        return probs[:, member_index(labels)]
    if class_weights is None or embeddings is None:
        raise ModelError("auth_scoring 'speakers' needs the model's embeddings and class weights")
    members = set(card.members)
    rows = [i for i, name in enumerate(labels) if name in members]
    if not rows:
        raise ModelError("none of the checkpoint's members is one of its classes")
    w = class_weights[rows] / np.linalg.norm(class_weights[rows], axis=1, keepdims=True)
    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    raw = e @ w.T
    if cohort is not None:
        from voxid.inference.scoring import as_norm

        # A stranger close to a member is usually close to many cohort voices too: the
        # normalised score falls for them, not for the member's own clips.
        raw = as_norm(raw, e, w, cohort, top_n)
    return raw.max(axis=1)


def _rate(mask: np.ndarray, accepted: np.ndarray) -> float | None:
    return float(np.mean(accepted[mask])) if mask.any() else None


def _at_frr(scores: np.ndarray, kind: np.ndarray, member: np.ndarray) -> dict[str, Any]:
    """FAR (all, seen, never seen) at the highest threshold whose FRR is <= `FRR_POINT`."""
    threshold = metrics.threshold_at_frr(scores[member], FRR_POINT)
    accepted = scores >= threshold
    return {
        "target_frr": FRR_POINT,
        "threshold": threshold,
        "frr": float(np.mean(~accepted[member])),
        "far": float(np.mean(accepted[~member])),
        "far_seen": _rate(kind == "seen", accepted),
        "far_unseen": _rate(kind == "unseen", accepted),
    }


def _level(
    scores: np.ndarray, kind: np.ndarray, threshold: float, names: np.ndarray
) -> dict[str, Any]:
    member = kind == "member"
    if member.all() or not member.any():
        raise ModelError("authentication needs both member and outsider test items")
    tar, non = scores[member], scores[~member]
    accepted = scores >= threshold
    value, eer_threshold = metrics.eer(tar, non)
    far, frr = metrics.far_frr(tar, non, threshold)
    cm = [
        [int(np.sum(member & accepted)), int(np.sum(member & ~accepted))],
        [int(np.sum(~member & accepted)), int(np.sum(~member & ~accepted))],
    ]
    outsiders = sorted(set(names[~member].tolist()))
    per_outsider = [
        {"name": n, "kind": str(kind[names == n][0]), "far": _rate(names == n, accepted)}
        for n in outsiders
    ]
    per_outsider.sort(key=lambda r: -r["far"])
    return {
        "n_member": int(member.sum()),
        "n_outsider_seen": int(np.sum(kind == "seen")),
        "n_outsider_unseen": int(np.sum(kind == "unseen")),
        "threshold": threshold,
        "confusion": {
            "rows": ["member", "outsider"],
            "cols": ["accepted", "rejected"],
            "counts": cm,
        },
        "accuracy": float(np.mean(accepted == member)),
        "far": far,
        "frr": frr,
        "far_seen": _rate(kind == "seen", accepted),
        "far_unseen": _rate(kind == "unseen", accepted),
        "eer": value,
        "eer_threshold": eer_threshold,
        "min_dcf": {str(p): metrics.min_dcf(tar, non, p) for p in P_TARGETS},
        "at_frr": _at_frr(scores, kind, member),
        "most_accepted_outsiders": per_outsider[:10],
    }


def authentication_report(
    speaker_names: np.ndarray,
    sources: np.ndarray,
    scores: np.ndarray,
    card: ModelCard,
    score: str | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Member/outsider metrics at chunk and file level.

    Arguments
    ---------
    speaker_names : (N,) true speaker name of each item.
    sources : (N,) source file of each item (file score = mean of its chunks' scores).
    scores : (N,) member score of each item (`member_scores`).
    card : the checkpoint's card (`members`, `scoring.threshold`, `train_speakers`).
    score : what the scores are, when they are not the checkpoint's own (AS-normed ones):
        then its stored threshold, set for its own scores, is not used.

    Returns the JSON-ready report and, per level, the (target, non-target) scores.
    """
    members = set(card.members)
    if not members:
        raise ModelError("checkpoint has mode 'authenticate' but lists no members")
    seen = set(card.train_speakers or ())
    names = np.asarray(speaker_names).astype(str)
    kind = np.array(
        ["member" if n in members else "seen" if n in seen else "unseen" for n in names]
    )
    stored = card.scoring.threshold if score is None else None
    if stored is None:
        threshold = metrics.threshold_at_eer(scores[kind == "member"], scores[kind != "member"])
        why = "the checkpoint's is for its plain scores" if score else "none in the checkpoint"
        source = f"eer of this test set ({why})"
    else:
        threshold, source = float(stored), f"checkpoint ({card.scoring.threshold_kind or 'stored'})"
    chunk = _level(scores, kind, threshold, names)
    files, inverse = group_sources(sources)
    file_scores = mean_by_group(scores, inverse, len(files))
    file_kind = first_by_group(kind, inverse, len(files))
    file = _level(file_scores, file_kind, threshold, first_by_group(names, inverse, len(files)))
    report = {
        "score": score
        or (
            "highest cosine to a member's class weight"
            if card.auth_scoring == "speakers"
            else "probability of the member class"
        ),
        "threshold_source": source,
        "members": sorted(members),
        "chunk": chunk,
        "file": file,
    }
    curves = {
        "chunk": (scores[kind == "member"], scores[kind != "member"]),
        "file": (file_scores[file_kind == "member"], file_scores[file_kind != "member"]),
    }
    return report, curves
