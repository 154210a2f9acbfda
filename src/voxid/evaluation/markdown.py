"""The human-readable ``report.md``: tables of the report's numbers and its figures."""

from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _figure(figures: dict[str, str], key: str, caption: str) -> list[str]:
    return [f"![{caption}]({figures[key]})", ""] if key in figures else []


def _identification(r: dict[str, Any], figures: dict[str, str]) -> list[str]:
    out = ["## Identification", ""]
    rows = []
    for level in ("chunk", "file"):
        m = r[level]
        rows.append(
            [
                level,
                m["n"],
                _pct(m["top1_accuracy"]),
                _pct(m["top5_accuracy"]),
                _num(m["macro"]["precision"]),
                _num(m["macro"]["recall"]),
                _num(m["macro"]["f1"]),
                _num(m["weighted"]["f1"]),
            ]
        )
    out += _table(
        [
            "level",
            "n",
            "top-1",
            f"top-{r['chunk']['top5_k']}",
            "macro P",
            "macro R",
            "macro F1",
            "weighted F1",
        ],
        rows,
    )
    out += ["### Per speaker (chunk level)", ""]
    out += _table(
        ["speaker", "precision", "recall", "F1", "support", "predicted"],
        [
            [
                c["name"],
                _num(c["precision"], 3),
                _num(c["recall"], 3),
                _num(c["f1"], 3),
                c["support"],
                c["predicted"],
            ]
            for c in r["chunk"]["per_speaker"]
        ],
    )
    out += ["### Most confused (true -> predicted, chunk level)", ""]
    out += (
        _table(
            ["true", "predicted", "count", "share of true"],
            [
                [p["true"], p["predicted"], p["count"], _pct(p["rate"])]
                for p in r["chunk"]["most_confused"]
            ],
        )
        if r["chunk"]["most_confused"]
        else ["No confusions.", ""]
    )
    out += _figure(figures, "confusion_chunk", "confusion matrix, chunk level")
    out += _figure(figures, "confusion_file", "confusion matrix, file level")
    out += ["Counts: `confusion_chunk.csv`, `confusion_file.csv`.", ""]
    if r["unseen_speakers"]:
        out += ["### Test speakers the model never saw (left out of the metrics above)", ""]
        out += _table(
            ["speaker", "items", "files", "mean top prob", "taken for"],
            [
                [
                    u["name"],
                    u["items"],
                    u["files"],
                    _num(u["mean_top_probability"], 3),
                    ", ".join(f"{k} ({v})" for k, v in u["predicted_as"].items()),
                ]
                for u in r["unseen_speakers"]
            ],
        )
    return out


def _authentication(r: dict[str, Any], figures: dict[str, str]) -> list[str]:
    out = _auth_table(r, "## Authentication (members vs outsiders)")
    cm = r["chunk"]["confusion"]["counts"]
    out += ["### Decisions at the threshold (chunk level)", ""]
    out += _table(
        ["true \\ decision", "accepted", "rejected"], [["member", *cm[0]], ["outsider", *cm[1]]]
    )
    for level in ("chunk", "file"):
        out += _figure(figures, f"det_roc_{level}", f"DET and ROC, {level} level")
        out += _figure(figures, f"scores_{level}", f"score histograms, {level} level")
    return out


def _authentication_asnorm(r: dict[str, Any], figures: dict[str, str]) -> list[str]:
    return _auth_table(r, "## Authentication, AS-normed scores")


def _auth_table(r: dict[str, Any], title: str) -> list[str]:
    """A heading, what the scores are, and a table of the figures at each level."""
    out = [
        title,
        "",
        f"Score: {r['score']}; threshold from {r['threshold_source']}; "
        f"members: {', '.join(r['members'])}.",
        "",
    ]
    rows = []
    for level in ("chunk", "file"):
        m = r[level]
        rows.append(
            [
                level,
                _num(m["threshold"]),
                _pct(m["accuracy"]),
                _pct(m["far"]),
                _pct(m["far_seen"]),
                _pct(m["far_unseen"]),
                _pct(m["frr"]),
                _pct(m["eer"]),
                *[_num(v) for v in m["min_dcf"].values()],
            ]
        )
    out += _table(
        [
            "level",
            "threshold",
            "accuracy",
            "FAR",
            "FAR seen",
            "FAR unseen",
            "FRR",
            "EER",
            *[f"minDCF {p}" for p in r["chunk"]["min_dcf"]],
        ],
        rows,
    )
    return out


def _verification(r: dict[str, Any], figures: dict[str, str]) -> list[str]:
    out = [
        "## Verification",
        "",
        f"Trials: {r['trial_mode']}; AS-norm cohort: {r['cohort_size'] or 'none'}.",
        "",
    ]
    rows = []
    for level in ("chunk", "file"):
        for kind in ("cosine", "asnorm"):
            if level in r and kind in r[level]:
                m = r[level][kind]
                rows.append(
                    [
                        level,
                        kind,
                        m["n_target"],
                        m["n_nontarget"],
                        _pct(m["eer"]),
                        _num(m["eer_threshold"]),
                        *[_num(v) for v in m["min_dcf"].values()],
                    ]
                )
    out += _table(
        [
            "level",
            "scores",
            "target",
            "non-target",
            "EER",
            "EER threshold",
            "minDCF 0.01",
            "minDCF 0.001",
        ],
        rows,
    )
    for level in ("chunk", "file"):
        stored = r.get(level, {}).get("cosine", {}).get("stored_threshold")
        if stored:
            out += [
                f"At the checkpoint's threshold {stored['threshold']:.4f} ({level} level): "
                f"FAR {_pct(stored['far'])}, FRR {_pct(stored['frr'])}.",
                "",
            ]
    for key in sorted(figures):
        if key.startswith(("det_roc_", "scores_")):
            out += _figure(figures, key, key.replace("_", " "))
    return out


def _uncertainty(r: dict[str, Any], figures: dict[str, str]) -> list[str]:
    out = [
        "## Uncertainty (Monte-Carlo dropout)",
        "",
        f"K = {r['mc_samples']} passes over {r['n']} items; flagged when predictive entropy "
        f"> {r['entropy_threshold']:.3f} nats: {r['n_flagged']} items.",
        "",
    ]
    rows = [
        [k.replace("_", " "), _num(r.get(k))]
        for k in (
            "ece_deterministic",
            "ece_mc",
            "accuracy_mc",
            "accuracy_flagged",
            "accuracy_unflagged",
            "mean_entropy",
            "mean_std",
            "mean_mutual_information",
            "unseen_mean_entropy",
        )
        if k in r
    ]
    out += _table(["measure", "value"], rows)
    out += _figure(figures, "reliability", "reliability diagram")
    out += _figure(figures, "entropy", "predictive entropy")
    out += ["### Most uncertain items", ""]
    out += _table(
        ["item", "true", "predicted", "mean prob", "std", "entropy"],
        [
            [
                u["item"],
                u["true"],
                u["predicted"],
                _num(u["mean_prob"], 3),
                _num(u["std"], 3),
                _num(u["entropy"], 3),
            ]
            for u in r["most_uncertain"]
        ],
    )
    out += ["Per item: `uncertainty.csv`.", ""]
    return out


def markdown(report: dict[str, Any], figures: dict[str, str]) -> str:
    """The human-readable report."""
    model = report["model"]
    lines = [
        f"# voxid evaluation: {model['name']} ({report['mode']})",
        "",
        f"Checkpoint `{report['checkpoint']}`, created {report['created']} "
        f"(voxid {report['voxid_version']}).",
        "",
    ]
    if "data" in report:
        lines += _table(
            ["data", "value"],
            [[k, v] for k, v in report["data"].items() if not isinstance(v, list)],
        )
    for key, render in (
        ("identification", _identification),
        ("authentication", _authentication),
        ("authentication_asnorm", _authentication_asnorm),
        ("verification", _verification),
        ("uncertainty", _uncertainty),
    ):
        if key in report:
            lines += render(report[key], figures)
    if "speed" in report:
        sp = report["speed"]
        scope = "waveform to decision" if sp["includes_features"] else "features precomputed"
        lines += [
            "## Speed",
            "",
            f"{sp['samples_per_second']:.1f} items/s, "
            f"{sp['x_real_time']:.1f} x real time over {sp['items_timed']} items, after "
            f"one warm-up batch ({scope}).",
            "",
        ]
    return "\n".join(lines)
