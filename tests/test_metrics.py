"""voxid.metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn import metrics as skm

from voxid import metrics as vm
from voxid.errors import ConfigError, DataError


def _random_labels(seed: int, n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    # Mostly right, sometimes a random class: a realistic, imperfect classifier.
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, n_classes, n))
    return y, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_report_matches_sklearn(seed):
    y, pred = _random_labels(seed, 500, 7)
    r = vm.classification_report(y, pred)
    p, rec, f1, sup = skm.precision_recall_fscore_support(y, pred, zero_division=0)
    got = r["per_class"]
    np.testing.assert_allclose([c["precision"] for c in got], p)
    np.testing.assert_allclose([c["recall"] for c in got], rec)
    np.testing.assert_allclose([c["f1"] for c in got], f1)
    assert [c["support"] for c in got] == sup.tolist()
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = skm.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        assert r[avg]["precision"] == pytest.approx(ap)
        assert r[avg]["recall"] == pytest.approx(ar)
        assert r[avg]["f1"] == pytest.approx(af)
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))


def test_confusion_matrix_matches_sklearn_with_string_labels():
    y, pred = _random_labels(3, 300, 5)
    names = np.array(["eve", "dan", "cat", "bob", "ann"])
    labels = ["ann", "bob", "cat", "dan", "eve"]
    got = vm.confusion_matrix(names[y], names[pred], labels)
    np.testing.assert_array_equal(got, skm.confusion_matrix(names[y], names[pred], labels=labels))


def test_class_never_predicted_has_zero_precision_without_warnings():
    y = np.array([0, 1, 2, 2])
    pred = np.array([0, 0, 0, 2])  # class 1 never predicted, class 3 absent altogether
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = vm.classification_report(y, pred, labels=[0, 1, 2, 3])
    by_label = {c["label"]: c for c in r["per_class"]}
    assert by_label[1]["precision"] == 0.0 and by_label[1]["predicted"] == 0
    assert by_label[3] == {**by_label[3], "precision": 0.0, "recall": 0.0, "f1": 0.0}
    ref = skm.precision_recall_fscore_support(
        y, pred, labels=[0, 1, 2, 3], average="macro", zero_division=0
    )
    assert r["macro"]["f1"] == pytest.approx(ref[2])


def test_precision_cannot_be_far_below_accuracy_when_all_classes_are_predicted():
    # The consistency the CNN paper's tables lack: with a balanced test set, macro recall
    # equals accuracy, and macro precision and F1 stay in the same range.
    y = np.repeat(np.arange(30), 100)
    pred = np.where(np.random.default_rng(4).random(y.size) < 0.8, y, (y + 1) % 30)
    r = vm.classification_report(y, pred)
    assert r["macro"]["recall"] == pytest.approx(r["accuracy"])
    assert abs(r["macro"]["precision"] - r["accuracy"]) < 0.05


def test_perfect_and_random_classifier():
    rng = np.random.default_rng(0)
    n, c = 20000, 10
    y = rng.integers(0, c, n)
    perfect = np.eye(c)[y] + 0.01 * rng.random((n, c))
    assert vm.topk_accuracy(perfect, y, 1) == 1.0
    random_scores = rng.random((n, c))
    assert vm.topk_accuracy(random_scores, y, 1) == pytest.approx(1 / c, abs=0.01)
    assert vm.topk_accuracy(random_scores, y, 5) == pytest.approx(5 / c, abs=0.015)
    r = vm.classification_report(y, random_scores.argmax(axis=1))
    assert r["accuracy"] == pytest.approx(1 / c, abs=0.01)


def test_topk_matches_sklearn_and_ties_do_not_count():
    rng = np.random.default_rng(5)
    scores = rng.random((400, 8))
    y = rng.integers(0, 8, 400)
    for k in (1, 3, 5):
        ref = skm.top_k_accuracy_score(y, scores, k=k, labels=np.arange(8))
        assert vm.topk_accuracy(scores, y, k) == pytest.approx(ref)
    assert vm.topk_accuracy(np.zeros((4, 3)), [1, 2, 1, 2], 1) == 0.0
    assert vm.topk_accuracy(scores, y, 8) == 1.0


def test_most_confused_pairs_orders_by_count():
    cm = np.array([[8, 0, 2], [5, 5, 0], [0, 1, 9]])
    pairs = vm.most_confused_pairs(cm, ["a", "b", "c"], top=2)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("b", "a", 5),
        ("a", "c", 2),
    ]
    assert pairs[0]["rate"] == 0.5
    assert vm.most_confused_pairs(np.diag([3, 4])) == []


def test_roc_curve_matches_sklearn():
    rng = np.random.default_rng(1)
    tar = np.round(rng.normal(1, 1, 300), 2)  # rounding makes ties, the tricky case
    non = np.round(rng.normal(0, 1, 700), 2)
    fpr, tpr, thr = vm.roc_curve(tar, non)
    y = np.r_[np.ones(tar.size), np.zeros(non.size)]
    rf, rt, rthr = skm.roc_curve(y, np.r_[tar, non], drop_intermediate=False)
    np.testing.assert_allclose(fpr, rf)
    np.testing.assert_allclose(tpr, rt)
    np.testing.assert_allclose(thr[1:], rthr[1:])
    far, frr, dthr = vm.det_curve(tar, non)
    np.testing.assert_allclose(dthr, thr[::-1])
    np.testing.assert_allclose(far, fpr[::-1])
    np.testing.assert_allclose(frr, 1 - tpr[::-1])


def test_eer_hand_computed_and_threshold_is_consistent():
    tar = np.array([0.35, 0.6, 0.7, 0.8, 0.9])
    non = np.array([0.1, 0.2, 0.3, 0.4, 0.65])
    # Any t in (0.4, 0.6] accepts one non-target (0.65) and rejects one target (0.35).
    value, thr = vm.eer(tar, non)
    assert value == pytest.approx(0.2)
    assert vm.far_frr(tar, non, thr) == (pytest.approx(0.2), pytest.approx(0.2))
    assert vm.threshold_at_eer(tar, non) == thr


def test_eer_uses_the_convex_hull():
    # Operating points (P_fa, P_miss): (1, 0), (0.5, 0), (0.5, 0.5), (0, 0.5), (0, 1).
    # The step crossing is at 0.5; the hull joins (0.5, 0) and (0, 0.5): EER 0.25.
    value, _ = vm.eer([0.8, 0.4], [0.5, 0.1])
    assert value == pytest.approx(0.25)


def test_eer_perfect_inverted_and_gaussian():
    assert vm.eer([2.0, 3.0], [0.0, 1.0])[0] == 0.0
    assert vm.eer([0.0, 1.0], [2.0, 3.0])[0] == pytest.approx(0.5)  # hull never worse
    rng = np.random.default_rng(7)
    d = 2.0
    tar, non = rng.normal(d, 1, 40000), rng.normal(0, 1, 40000)
    assert vm.eer(tar, non)[0] == pytest.approx(norm.cdf(-d / 2), abs=0.005)
    same = rng.normal(0, 1, 20000)
    assert vm.eer(same[:10000], same[10000:])[0] == pytest.approx(0.5, abs=0.02)


def _brute_min_dcf(tar, non, p, c_miss, c_fa):
    best = np.inf
    for t in np.r_[np.unique(np.r_[tar, non]), np.inf]:
        pm, pf = np.mean(tar < t), np.mean(non >= t)
        best = min(best, c_miss * p * pm + c_fa * (1 - p) * pf)
    return min(best / min(c_miss * p, c_fa * (1 - p)), 1.0)


@pytest.mark.parametrize(("p", "c_miss", "c_fa"), [(0.01, 1, 1), (0.001, 1, 1), (0.05, 10, 1)])
def test_min_dcf_matches_brute_force(p, c_miss, c_fa):
    rng = np.random.default_rng(2)
    tar, non = rng.normal(2, 1, 400), rng.normal(0, 1, 3600)
    got = vm.min_dcf(tar, non, p, c_miss, c_fa)
    assert got == pytest.approx(_brute_min_dcf(tar, non, p, c_miss, c_fa))
    thr = vm.min_dcf_threshold(tar, non, p, c_miss, c_fa)
    pf, pm = vm.far_frr(tar, non, thr)
    cost = (c_miss * p * pm + c_fa * (1 - p) * pf) / min(c_miss * p, c_fa * (1 - p))
    assert cost == pytest.approx(got)


def test_min_dcf_random_scores_is_near_one():
    rng = np.random.default_rng(3)
    s = rng.random(20000)
    assert vm.min_dcf(s[:2000], s[2000:], 0.01) > 0.9


def test_threshold_at_far_bounds_the_far():
    rng = np.random.default_rng(4)
    non = rng.normal(0, 1, 1000)
    for far in (0.0, 0.001, 0.01, 0.1, 0.5):
        t = vm.threshold_at_far(non, far)
        assert np.mean(non >= t) <= far
        # The next non-target score below must push FAR over the target.
        assert np.mean(non >= non[non < t].max()) > far
    assert vm.threshold_at_far(non, 1.0) == non.min()


def test_threshold_at_frr_bounds_the_frr():
    rng = np.random.default_rng(5)
    tar = rng.normal(2, 1, 500)
    for frr in (0.0, 0.002, 0.02, 0.1, 0.5):
        t = vm.threshold_at_frr(tar, frr)
        assert np.mean(tar < t) <= frr
        # The next target score above must push FRR over the target.
        assert np.mean(tar < tar[tar >= t].min() + 1e-12) > frr
    assert vm.threshold_at_frr(tar, 0.0) == tar.min()
    assert np.mean(tar >= vm.threshold_at_frr(tar, 1.0)) == 0.0


def test_far_frr_accepts_at_equality():
    assert vm.far_frr([0.5], [0.5], 0.5) == (1.0, 0.0)


def test_calibration_perfect_and_overconfident():
    y = np.repeat([0, 1], 50)
    onehot = np.eye(2)[y]
    assert vm.expected_calibration_error(onehot, y) == 0.0
    # Always 90 % sure, right half of the time: ECE = 0.4.
    p = np.where(np.arange(100)[:, None] % 2 == 0, [[0.9, 0.1]], [[0.1, 0.9]])
    assert vm.expected_calibration_error(p, y) == pytest.approx(0.4)
    uniform = np.full((3, 4), 0.25)
    np.testing.assert_allclose(vm.predictive_entropy(uniform), np.log(4))
    agree = np.repeat(uniform[None], 5, axis=0)
    np.testing.assert_allclose(vm.mutual_information(agree), 0.0, atol=1e-12)


def test_binary_probabilities_drawn_from_themselves_are_calibrated():
    rng = np.random.default_rng(6)
    p1 = rng.random(20000)
    y = (rng.random(20000) < p1).astype(int)
    c = vm.reliability_curve(p1, y, n_bins=10)
    assert int(c["count"].sum()) == 20000
    assert np.all(c["confidence"][c["count"] > 0] >= 0.5)  # confidence = max(p, 1 - p)
    assert vm.expected_calibration_error(p1, y, n_bins=10) < 0.02
    sharpened = np.clip((p1 - 0.5) * 3 + 0.5, 0, 1)  # overconfident version of the same
    assert vm.expected_calibration_error(sharpened, y, n_bins=10) > 0.1


@pytest.mark.parametrize(
    "call",
    [
        lambda: vm.eer([], [0.1]),
        lambda: vm.eer([0.1], []),
        lambda: vm.min_dcf([np.nan], [0.1], 0.01),
        lambda: vm.classification_report([], []),
        lambda: vm.confusion_matrix([0, 1], [0]),
        lambda: vm.confusion_matrix([0, 5], [0, 1], labels=[0, 1]),
        lambda: vm.topk_accuracy(np.zeros((0, 3)), [], 1),
        lambda: vm.expected_calibration_error(np.array([[2.0, -1.0]]), [0]),
        lambda: vm.predictive_entropy(np.zeros((0, 2))),
    ],
)
def test_bad_data_raises_data_error(call):
    with pytest.raises(DataError):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: vm.min_dcf([1.0], [0.0], 0.0),
        lambda: vm.min_dcf([1.0], [0.0], 0.01, c_miss=0),
        lambda: vm.threshold_at_far([0.1], 1.5),
        lambda: vm.topk_accuracy(np.zeros((1, 3)), [0], 0),
        lambda: vm.confusion_matrix([0], [0], labels=[0, 0]),
    ],
)
def test_bad_parameters_raise_config_error(call):
    with pytest.raises(ConfigError):
        call()
