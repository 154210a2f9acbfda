"""Writing the report: ``report.json`` (stable keys for scripts) and ``report.md``.

``report["summary"]`` is a flat dict of the headline numbers under fixed names
(`SUMMARY_KEYS`), which `voxid compare` puts side by side; a number a mode does not
produce is absent (or null).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voxid.evaluation.common import write_json, write_text
from voxid.evaluation.markdown import markdown

#: Headline metrics in the order `voxid compare` shows them. Identification numbers are
#: chunk level (``file_*`` at file level); authentication's at chunk level (``file_eer``);
#: verification's at file level, the unit of a trial list (``chunk_eer`` at chunk level).
SUMMARY_KEYS = (
    "top1_accuracy",
    "top5_accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "file_top1_accuracy",
    "file_macro_f1",
    "accuracy",
    "far",
    "far_seen",
    "far_unseen",
    "frr",
    "far_unseen_at_frr_0.02",
    "eer",
    "min_dcf_0.01",
    "min_dcf_0.001",
    "file_eer",
    "chunk_eer",
    "asnorm_eer",
    "asnorm_min_dcf_0.01",
    "asnorm_far_unseen_at_frr_0.02",
    "ece",
    "ece_mc",
    "samples_per_second",
    "x_real_time",
)


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The flat headline numbers of a report (see `SUMMARY_KEYS`).

    >>> summarise({"mode": "identify", "identification": {"chunk": {"top1_accuracy": 0.9,
    ...     "top5_accuracy": 1.0, "macro": {"precision": 0.9, "recall": 0.9, "f1": 0.9}},
    ...     "file": {"top1_accuracy": 1.0, "macro": {"f1": 1.0}}}})["macro_f1"]
    0.9
    """
    s: dict[str, Any] = {"mode": report.get("mode"), "model": report.get("model", {}).get("name")}
    if "identification" in report:
        c, f = report["identification"]["chunk"], report["identification"]["file"]
        s.update(
            top1_accuracy=c["top1_accuracy"],
            top5_accuracy=c["top5_accuracy"],
            macro_precision=c["macro"]["precision"],
            macro_recall=c["macro"]["recall"],
            macro_f1=c["macro"]["f1"],
            file_top1_accuracy=f["top1_accuracy"],
            file_macro_f1=f["macro"]["f1"],
        )
    if "authentication" in report:
        c, f = report["authentication"]["chunk"], report["authentication"]["file"]
        s.update({k: c[k] for k in ("accuracy", "far", "far_seen", "far_unseen", "frr", "eer")})
        s.update({f"min_dcf_{p}": v for p, v in c["min_dcf"].items()}, file_eer=f["eer"])
        at = c.get("at_frr") or {}
        if at:
            s[f"far_unseen_at_frr_{at['target_frr']}"] = at["far_unseen"]
        if "authentication_asnorm" in report:
            n = report["authentication_asnorm"]["chunk"]
            s.update(asnorm_eer=n["eer"], **{"asnorm_min_dcf_0.01": n["min_dcf"]["0.01"]})
            at = n.get("at_frr") or {}
            if at:
                s[f"asnorm_far_unseen_at_frr_{at['target_frr']}"] = at["far_unseen"]
    if "verification" in report:
        v = report["verification"]
        main = v.get("file") or v.get("chunk")
        s.update(
            eer=main["cosine"]["eer"],
            **{f"min_dcf_{p}": x for p, x in main["cosine"]["min_dcf"].items()},
        )
        if "chunk" in v:
            s["chunk_eer"] = v["chunk"]["cosine"]["eer"]
        if "asnorm" in main:
            s["asnorm_eer"] = main["asnorm"]["eer"]
            s["asnorm_min_dcf_0.01"] = main["asnorm"]["min_dcf"]["0.01"]
    if "uncertainty" in report:
        s.update(
            ece=report["uncertainty"].get("ece_deterministic"),
            ece_mc=report["uncertainty"].get("ece_mc"),
        )
    if "speed" in report:
        s.update(
            samples_per_second=report["speed"]["samples_per_second"],
            x_real_time=report["speed"]["x_real_time"],
        )
    return s


def write_report(out: Path, report: dict[str, Any], figures: dict[str, str]) -> dict[str, Path]:
    """Write ``report.json`` and ``report.md`` into `out` (each atomically)."""
    report["figures"] = dict(figures)
    return {
        "json": write_json(out / "report.json", report),
        "md": write_text(out / "report.md", markdown(report, figures)),
    }
