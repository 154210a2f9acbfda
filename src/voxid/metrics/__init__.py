"""Pure metric functions on numpy arrays: classification, detection, calibration.

Everything here takes arrays and returns numbers or arrays; nothing reads files, imports
torch or draws. Bad input (empty, mismatched, non-finite) raises `voxid.errors.DataError`
and bad parameters raise `voxid.errors.ConfigError`, each with a one-line message.

Score convention for detection: higher means "same speaker"; accept when score >= threshold.
"""

from __future__ import annotations

from voxid.metrics.calibration import (
    expected_calibration_error,
    mutual_information,
    predictive_entropy,
    reliability_curve,
)
from voxid.metrics.classification import (
    classification_report,
    confusion_matrix,
    most_confused_pairs,
    topk_accuracy,
)
from voxid.metrics.detection import (
    det_curve,
    eer,
    error_interval,
    far_frr,
    min_dcf,
    min_dcf_threshold,
    roc_curve,
    threshold_at_eer,
    threshold_at_far,
    threshold_at_frr,
)

__all__ = [
    "classification_report",
    "confusion_matrix",
    "det_curve",
    "eer",
    "error_interval",
    "expected_calibration_error",
    "far_frr",
    "min_dcf",
    "min_dcf_threshold",
    "most_confused_pairs",
    "mutual_information",
    "predictive_entropy",
    "reliability_curve",
    "roc_curve",
    "threshold_at_eer",
    "threshold_at_far",
    "threshold_at_frr",
    "topk_accuracy",
]
