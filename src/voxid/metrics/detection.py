"""Detection (verification / authentication) metrics on target and non-target scores.

Convention everywhere: a higher score means "more likely the same speaker", and a trial
is **accepted when score >= threshold**. FAR (false acceptance rate, P_fa) is the share
of non-target scores accepted; FRR (false rejection rate, P_miss) is the share of target
scores rejected.

Thresholds that these functions *choose* (at the EER, at a FAR, at minDCF) are placed in
the middle of the interval of thresholds that give the same error rates, so that scores
computed by another backend (ONNX vs torch, a few ulp apart) do not cross them.
"""

from __future__ import annotations

import numpy as np

from voxid.errors import ConfigError, require_positive
from voxid.metrics._checks import probability, scores_1d


def far_frr(tar: np.ndarray, non: np.ndarray, threshold: float) -> tuple[float, float]:
    """FAR and FRR at `threshold` (accept when score >= threshold).

    >>> far_frr([0.9, 0.8, 0.3], [0.1, 0.5, 0.2, 0.6], 0.5)
    (0.5, 0.3333333333333333)
    """
    t = scores_1d(tar, "target scores")
    n = scores_1d(non, "non-target scores")
    thr = float(threshold)
    return float(np.mean(n >= thr)), float(np.mean(t < thr))


def error_interval(errors: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval of an error rate seen as `errors` of
    `trials` independent trials; `(0, 1)` when there are no trials.

    With no errors the upper bound is about 3.7 / trials (the one-sided 95 % bound is the
    rule of three, 3 / trials).

    >>> [round(b, 4) for b in error_interval(1, 10)]
    [0.0025, 0.445]
    """
    from scipy.stats import beta

    if not 0 <= errors <= trials:
        raise ConfigError(f"errors: must be between 0 and trials ({trials}), got {errors}")
    alpha = 1.0 - probability(confidence, "confidence", open_interval=True)
    lo = 0.0 if errors == 0 else float(beta.ppf(alpha / 2, errors, trials - errors + 1))
    hi = 1.0 if errors == trials else float(beta.ppf(1 - alpha / 2, errors + 1, trials - errors))
    return lo, hi


def _sweep(tar: np.ndarray, non: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All distinct operating points, threshold ascending.

    Returns (raw thresholds, P_fa, P_miss): one point per distinct score u (threshold = u),
    plus a last point at +inf that rejects everything.
    """
    u = np.unique(np.concatenate([tar, non]))
    p_miss = np.searchsorted(np.sort(tar), u, side="left") / tar.size
    p_fa = 1.0 - np.searchsorted(np.sort(non), u, side="left") / non.size
    return np.append(u, np.inf), np.append(p_fa, 0.0), np.append(p_miss, 1.0)


def _robust(raw: np.ndarray, i: int) -> float:
    """A threshold giving the same rates as ``raw[i]`` but away from any score."""
    if i == 0:
        return float(raw[0])  # accepts every trial; no score lies below it
    if np.isinf(raw[i]):
        return float(np.nextafter(raw[i - 1], np.inf))  # rejects everything
    return float((raw[i - 1] + raw[i]) / 2.0)


def _lower_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the lower convex hull of points sorted by ascending x (monotone chain)."""
    hull: list[int] = []
    for i in range(x.size):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (x[b] - x[a]) * (y[i] - y[a]) - (y[b] - y[a]) * (x[i] - x[a])
            if cross > 0:
                break
            hull.pop()
        hull.append(i)
    return np.asarray(hull)


def eer(tar: np.ndarray, non: np.ndarray) -> tuple[float, float]:
    """Equal error rate on the ROC convex hull, and the threshold closest to it.

    The EER is where the convex hull of the (P_fa, P_miss) operating points crosses
    P_fa = P_miss (the ROCCH-EER of the BOSARIS toolkit and NIST SRE evaluations): every
    point on the hull is reachable by mixing two thresholds, so the value neither depends on
    how finely scores are quantised nor exceeds 0.5. The returned threshold is the one whose
    empirical FAR and FRR are closest to each other (ties: the smaller of the two rates),
    so ``far_frr`` at it gives the EER up to the granularity of the scores.

    Arguments
    ---------
    tar : scores of target (same speaker) trials.
    non : scores of non-target trials.

    >>> eer(np.arange(8, 18), np.arange(0, 10))  # overlap {8, 9}: one error in ten each
    (0.1, 8.5)
    """
    t = scores_1d(tar, "target scores")
    n = scores_1d(non, "non-target scores")
    raw, p_fa, p_miss = _sweep(t, n)
    # Reverse so P_fa ascends (P_miss descends) for the hull of the lower-left frontier.
    x, y = p_fa[::-1], p_miss[::-1]
    h = _lower_hull(x, y)
    d = y[h] - x[h]  # decreasing from +1 at (0, 1) to -1 at (1, 0)
    j = int(np.argmax(d <= 0))
    if d[j] == 0 or j == 0:
        value = float(x[h[j]])
    else:
        alpha = d[j - 1] / (d[j - 1] - d[j])
        value = float(x[h[j - 1]] + alpha * (x[h[j]] - x[h[j - 1]]))
    gap = np.abs(p_fa - p_miss) + 1e-12 * np.maximum(p_fa, p_miss)
    return value, _robust(raw, int(np.argmin(gap)))


def threshold_at_eer(tar: np.ndarray, non: np.ndarray) -> float:
    """The threshold where FAR and FRR are closest (the second value of `eer`).

    >>> threshold_at_eer([0.7, 0.8, 0.9], [0.1, 0.2, 0.75])
    0.725
    """
    return eer(tar, non)[1]


def threshold_at_far(non: np.ndarray, far: float) -> float:
    """The lowest operating threshold whose FAR on `non` does not exceed `far`.

    Of the interval of thresholds with that FAR, the midpoint between the highest
    rejected and the lowest accepted non-target score is returned (see module notes).
    ``far=1`` accepts every trial; ``far=0`` rejects every non-target score.

    >>> threshold_at_far([0.1, 0.2, 0.3, 0.4], 0.25)
    0.35
    """
    n = np.sort(scores_1d(non, "non-target scores"))[::-1]  # descending
    rate = probability(far, "far")
    # Up to k non-target scores may be accepted; the tolerance absorbs far*n round-off.
    k = int(np.floor(rate * n.size + 1e-9))
    if k >= n.size:
        return float(n[-1])
    rejected = n[k]  # the highest score that must be rejected
    above = n[:k][n[:k] > rejected]
    if above.size == 0:
        return float(np.nextafter(rejected, np.inf))
    return float((rejected + above[-1]) / 2.0)


def threshold_at_frr(tar: np.ndarray, frr: float) -> float:
    """The highest operating threshold whose FRR on `tar` does not exceed `frr`.

    The mirror of `threshold_at_far`: the midpoint between the highest rejected and the
    lowest accepted target score. ``frr=0`` accepts every target score.

    >>> round(threshold_at_frr([0.1, 0.2, 0.3, 0.4], 0.25), 6)
    0.15
    >>> threshold_at_frr([0.1, 0.2, 0.3, 0.4], 0.0)
    0.1
    """
    t = np.sort(scores_1d(tar, "target scores"))  # ascending
    rate = probability(frr, "frr")
    # Up to k target scores may be rejected; the tolerance absorbs frr*n round-off.
    k = int(np.floor(rate * t.size + 1e-9))
    if k >= t.size:
        return float(np.nextafter(t[-1], np.inf))
    accepted = t[k]  # the lowest score that must be accepted
    below = t[:k][t[:k] < accepted]
    if below.size == 0:
        return float(accepted)
    return float((accepted + below[-1]) / 2.0)


def _dcf_points(
    tar: np.ndarray, non: np.ndarray, p_target: float, c_miss: float, c_fa: float
) -> tuple[np.ndarray, np.ndarray]:
    t = scores_1d(tar, "target scores")
    n = scores_1d(non, "non-target scores")
    p = probability(p_target, "p_target", open_interval=True)
    require_positive("c_miss", c_miss)
    require_positive("c_fa", c_fa)
    raw, p_fa, p_miss = _sweep(t, n)
    dcf = c_miss * p * p_miss + c_fa * (1 - p) * p_fa
    # Normalised by the best trivial system (accept all or reject all): 1 = useless.
    return raw, dcf / min(c_miss * p, c_fa * (1 - p))


def min_dcf(
    tar: np.ndarray, non: np.ndarray, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0
) -> float:
    """Minimum normalised detection cost over all thresholds (NIST SRE definition).

    ``DCF(t) = (c_miss p P_miss(t) + c_fa (1 - p) P_fa(t)) / min(c_miss p, c_fa (1 - p))``;
    0 is perfect and 1 is no better than always accepting or always rejecting.

    Arguments
    ---------
    tar, non : target and non-target scores.
    p_target : prior probability of a target trial, in (0, 1), e.g. 0.01.
    c_miss, c_fa : costs of a miss and of a false acceptance.

    >>> min_dcf([3.0, 4.0, 5.0], [0.0, 1.0, 2.0], p_target=0.01)
    0.0
    >>> min_dcf([1.0, 2.0, 4.0], [0.0, 3.0], p_target=0.5)  # best: threshold 1
    0.5
    """
    _, dcf = _dcf_points(tar, non, p_target, c_miss, c_fa)
    return float(min(dcf.min(), 1.0))


def min_dcf_threshold(
    tar: np.ndarray, non: np.ndarray, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0
) -> float:
    """The threshold at which `min_dcf` is reached (the first, lowest, if several).

    >>> min_dcf_threshold([3.0, 4.0, 5.0], [0.0, 1.0, 2.0], p_target=0.5)
    2.5
    """
    raw, dcf = _dcf_points(tar, non, p_target, c_miss, c_fa)
    return _robust(raw, int(np.argmin(dcf)))


def roc_curve(tar: np.ndarray, non: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds), thresholds descending from +inf.

    Every distinct score is a threshold (scikit-learn's ``roc_curve`` with
    ``drop_intermediate=False``); the first point (threshold +inf) accepts nothing.

    >>> fpr, tpr, thr = roc_curve([0.8, 0.4], [0.5, 0.1])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    t = scores_1d(tar, "target scores")
    n = scores_1d(non, "non-target scores")
    raw, p_fa, p_miss = _sweep(t, n)
    return p_fa[::-1], 1.0 - p_miss[::-1], raw[::-1]


def det_curve(tar: np.ndarray, non: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET points (far, frr, thresholds), thresholds ascending, ending at +inf.

    >>> far, frr, thr = det_curve([0.8, 0.4], [0.5, 0.1])
    >>> far.tolist(), frr.tolist()
    ([1.0, 0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5, 1.0])
    """
    t = scores_1d(tar, "target scores")
    n = scores_1d(non, "non-target scores")
    raw, p_fa, p_miss = _sweep(t, n)
    return p_fa, p_miss, raw
