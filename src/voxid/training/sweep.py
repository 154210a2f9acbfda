"""A grid of batch sizes x epochs (the CNN paper's table): train each cell, tabulate.

Each cell trains exactly its number of epochs (no early stopping, so the epoch count means
what the table says) into `<out>/bs<B>-ep<E>/`; a cell whose run folder already holds a
finished run is read back instead of retrained, so an interrupted sweep picks up where it
stopped. The table (loss, accuracy, precision, recall, F1 on the test split, or on
validation where the store has no test split) goes to `sweep.csv` and `sweep.md`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

from voxid.config import TrainConfig
from voxid.io import atomic_write

COLUMNS = ("batch_size", "epochs", "split", "loss", "accuracy", "precision", "recall", "f1")


def _row(batch_size: int, epochs: int, metrics: dict[str, Any]) -> dict[str, Any]:
    split = "test" if metrics.get("test") else "val"
    m = metrics[split]
    return {"batch_size": batch_size, "epochs": epochs, "split": split, "loss": m.get("loss"),
            "accuracy": m["top1"], "precision": m["precision"], "recall": m["recall"],
            "f1": m["macro_f1"]}  # fmt: skip


def run_sweep(
    cfg: TrainConfig, data: str | Path, out_dir: str | Path, batch_sizes: list[int],
    epochs: list[int], *, progress: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """Train every (batch size, epochs) cell; write and return the table rows."""
    from voxid.training.run import train

    out = Path(out_dir)
    rows = []
    for b in batch_sizes:
        for e in epochs:
            run = out / f"bs{b}-ep{e}"
            done = run / "metrics.json"
            if done.is_file():
                metrics = json.loads(done.read_text())
            else:
                cell = dataclasses.replace(cfg, batch_size=b, epochs=e, patience=0)
                metrics = train(cell, data, run, progress=progress).metrics
            rows.append(_row(b, e, metrics))
    write_table(rows, out)
    return rows


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    """`sweep.csv` (full precision) and `sweep.md` (4 decimals), each written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = buf.getvalue()
    atomic_write(out / "sweep.csv", lambda tmp: tmp.write_text(text))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    md = "\n".join(lines) + "\n"
    atomic_write(out / "sweep.md", lambda tmp: tmp.write_text(md))


def sweep_table(rows: list[dict[str, Any]]) -> Any:
    """The table as a `rich.table.Table` for the terminal."""
    from rich.table import Table

    table = Table(title="sweep")
    for c in COLUMNS:
        table.add_column(c, justify="left" if c == "split" else "right")
    for r in rows:
        table.add_row(*(_fmt(r[c]) for c in COLUMNS))
    return table
