"""Print the demo's summary from the files it wrote; exit 1 if a check failed.

The demo claims: the model identifies the test split, an enrolled voice is recognised from a
new utterance, and a never-enrolled voice comes out as "unknown". This script checks those
claims from the JSON the commands wrote rather than trusting them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def main(
    out: str,
    model: str,
    enrolled: str,
    stranger: str,
    base_enrolled: str = "",
    base_stranger: str = "",
) -> int:
    """Show what the demo produced and whether each claim held; the base model's enrolled
    speaker and stranger default to the trained model's."""  # fmt: skip
    base_cast = (base_enrolled or enrolled, base_stranger or stranger)
    root = Path(out)
    console = Console()
    report = _load(root / "report" / "eval" / "report.json")
    summary = report.get("summary", {})
    table = Table(title=f"voxid demo: {model}", show_header=True)
    table.add_column("what")
    table.add_column("result")
    table.add_column("", justify="center")
    ok = True

    def row(what: str, result: str, passed: bool | None = None) -> None:
        nonlocal ok
        mark = "" if passed is None else ("[green]ok[/]" if passed else "[red]FAILED[/]")
        ok &= passed is not False
        table.add_row(what, result, mark)

    top1, f1 = summary.get("top1_accuracy"), summary.get("macro_f1")
    if top1 is not None:
        row("test top-1 / macro-F1 (1-s chunks)", f"{top1:.3f} / {f1:.3f}")
    if summary.get("file_top1_accuracy") is not None:
        row("test top-1 (whole files)", f"{summary['file_top1_accuracy']:.3f}")
    metrics = _load(root / "runs" / model / "metrics.json")
    if metrics:
        row(
            "training time",
            f"{metrics.get('train_seconds', 0):.0f} s, {metrics.get('epochs_run', '?')} epochs",
        )
    for prefix, who, cast in (("base_", "base model, no training", base_cast),
                              ("", f"{model} trained here", (enrolled, stranger))):  # fmt: skip
        _enrolment_rows(root, prefix, who, *cast, row)
    console.print(table)
    console.print(
        f"Reports: {root / 'report'} (eda/report.md, eval/report.md); model: "
        f"{root / 'runs' / model}; registry: {root / 'speakers.db'}"
    )
    return 0 if ok else 1


def _enrolment_rows(root: Path, prefix: str, who: str, enrolled: str, stranger: str, row) -> None:
    """The identify/verify checks of one model (files `<prefix>id_known.json`...)."""
    known = next(iter(_load(root / f"{prefix}id_known.json").values()), None)
    if known is None:
        return
    row(
        f"{who}: identify a new utterance of {enrolled}",
        f"{known['name']} (score {known['score']:.2f}, threshold {known['threshold']:.2f})",
        known["name"] == enrolled,
    )
    verify = _load(root / f"{prefix}verify.json")
    if verify:
        row(
            f"{who}: verify {enrolled}",
            f"score {verify['score']:.2f}: {'accepted' if verify['accepted'] else 'rejected'}",
            verify["accepted"],
        )
    odd = next(iter(_load(root / f"{prefix}id_stranger.json").values()))
    row(
        f"{who}: identify the stranger {stranger}",
        f"{odd['name']} (nearest {odd['candidates'][0]['name']} at {odd['score']:.2f}, "
        f"threshold {odd['threshold']:.2f})",
        odd["name"] == "unknown",
    )


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:7]))
