"""`voxid train`, `voxid sweep` and `voxid teacher`: train a recipe on a store, a grid of
them, or embed a store with a teacher encoder for distillation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

CONFIG_HELP = "A recipe: configs/<model>.yaml, or a bare model name (seed_cnn, crnn, ecapa, ...)."
OVERRIDE_HELP = "Recipe overrides key=value (nested: model.channels=64, augment.spec_augment=true)."


def _ints(text: str, option: str) -> list[int]:
    from voxid.errors import ConfigError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{option}: expected positive integers, got {text!r}")
    return values


#: Lightning's start-up lines that say nothing about this run: hardware it did not find,
#: advertisements for its cloud products, and limits left at their defaults.
LIGHTNING_NOISE = (
    "💡 Tip",
    "GPU available",
    "TPU available",
    "HPU available",
    "`Trainer(limit_",
)


class _LightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(LIGHTNING_NOISE)


def _quiet_lightning() -> None:
    """Drop `LIGHTNING_NOISE` from the command's output (its warnings and other lines stay)."""
    # The logger the records are made on: a filter there sees each of them once.
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _LightningNoise) for f in logger.filters):
        logger.addFilter(_LightningNoise())


def register(app: typer.Typer) -> None:
    """Add `train`, `sweep` and `teacher` to the voxid app."""
    register_teacher(app)

    @app.command()
    def train(
        *,
        config: Annotated[str, typer.Argument(help=CONFIG_HELP)],
        overrides: Annotated[
            list[str] | None, typer.Argument(help=OVERRIDE_HELP, show_default=False)
        ] = None,
        data: Annotated[Path, typer.Option("--data", "-d", help="Store from voxid prepare (.h5).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder, e.g. runs/NAME.")],
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue from OUT/last.ckpt.")
        ] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Train a speaker model (best.ckpt, last.ckpt, model.pt, metrics.json in OUT)."""
        from rich.console import Console

        from voxid.config import load_config
        from voxid.training.run import train as run_training

        cfg = load_config(config, overrides or [])
        _quiet_lightning()
        result = run_training(cfg, data, out, resume=resume, progress=not quiet)
        if result.metrics:  # only the main process of a multi-process run reports
            console = Console()
            _print_result(console, result)
            if line := early_stop_line(result.metrics, cfg.patience):
                console.print(line, soft_wrap=True)  # one line, easy to grep
            if averaged := result.metrics.get("averaged_epochs"):
                console.print(f"model: the mean of epochs {epoch_span(averaged)}")
            if seeds := result.metrics.get("souped_seeds"):
                seeds_text = ", ".join(str(s) for s in seeds)
                console.print(f"model: the mean of {len(seeds)} runs (seeds {seeds_text})")

    @app.command()
    def sweep(
        *,
        config: Annotated[str, typer.Argument(help=CONFIG_HELP)],
        overrides: Annotated[
            list[str] | None, typer.Argument(help=OVERRIDE_HELP, show_default=False)
        ] = None,
        data: Annotated[Path, typer.Option("--data", "-d", help="Store from voxid prepare (.h5).")],
        batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "16,32,64",
        epochs: Annotated[str, typer.Option(help="Comma-separated epoch counts.")] = "5,10",
        out: Annotated[Path, typer.Option("--out", "-o", help="Sweep folder (one run per cell).")],
        quiet: Annotated[
            bool, typer.Option("--quiet/--progress", help="Progress bars per run.")
        ] = True,
    ) -> None:
        """Train over a grid of batch sizes x epochs; write sweep.csv and sweep.md."""
        from rich.console import Console

        from voxid.config import load_config
        from voxid.training.sweep import run_sweep, sweep_table

        cfg = load_config(config, overrides or [])
        grid = (_ints(batch_sizes, "--batch-sizes"), _ints(epochs, "--epochs"))
        _quiet_lightning()
        rows = run_sweep(cfg, data, out, *grid, progress=not quiet)
        console = Console()
        console.print(sweep_table(rows))
        console.print(f"[green]wrote[/] {out / 'sweep.csv'} and {out / 'sweep.md'}")


def register_teacher(app: typer.Typer) -> None:
    """Add `teacher` to the voxid app."""

    @app.command()
    def teacher(
        store: Annotated[
            Path, typer.Argument(help="A waveform store (voxid prepare --features waveform).")
        ],
        out: Annotated[
            Path | None,
            typer.Option("--out", "-o", help="Targets file (default STORE.<teacher>.npz)."),
        ] = None,
        name: Annotated[
            str, typer.Option("--teacher", help="The teacher encoder.")
        ] = "resemblyzer",
        split: Annotated[str, typer.Option(help="The split whose items it embeds.")] = "train",
        threads: Annotated[
            int, typer.Option(min=0, help="Torch threads (0: torch's default).")
        ] = 0,
    ) -> None:
        """Embed a store's training items with a pretrained teacher, for distillation
        (train with distill_targets=FILE)."""
        import torch
        from rich.progress import Progress

        from voxid.training.distill import teacher_targets

        if threads:
            torch.set_num_threads(threads)
        with Progress(transient=True) as bar:
            task = bar.add_task(f"{name} embeddings", total=None)
            path = teacher_targets(
                store, out, teacher=name, split=split,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
        print(f"wrote {path}")


def early_stop_line(metrics: dict, patience: int) -> str | None:
    """The line announcing an early stop, from a run's metrics; None when the run used
    all its epochs.

    Epochs count from 1 here, as people count them (metrics.json's `best_epoch` is 0-based).

    >>> early_stop_line({"stopped_early": True, "epochs_run": 7, "best_epoch": 1,
    ...                  "monitor": "val_loss"}, 5)
    'stopped early at epoch 7 (no better val_loss for 5 epochs); best epoch 2'
    >>> early_stop_line({"stopped_early": False, "epochs_run": 10}, 5) is None
    True
    """
    if not metrics.get("stopped_early"):
        return None
    return (
        f"stopped early at epoch {metrics['epochs_run']} (no better {metrics['monitor']} "
        f"for {patience} epochs); best epoch {metrics['best_epoch'] + 1}"
    )


def epoch_span(epochs: list[int]) -> str:
    """0-based epochs as people count them.

    >>> epoch_span([11, 12, 13]), epoch_span([4])
    ('12-14', '5')
    """
    first, last = min(epochs) + 1, max(epochs) + 1
    return f"{first}-{last}" if last > first else str(first)


def _print_result(console, result) -> None:
    from rich.table import Table

    table = Table(title=f"run {result.out_dir}", show_header=True)
    table.add_column("split")
    for name in ("n", "loss", "top1", "precision", "recall", "macro_f1"):
        table.add_column(name, justify="right")
    for split in ("val", "test"):
        row = result.metrics.get(split)
        if not row:
            continue
        cells = [row.get(k) for k in ("n", "loss", "top1", "precision", "recall", "macro_f1")]
        table.add_row(split, *("-" if v is None else f"{v:.4g}" for v in cells))
    console.print(table)
    auth = (result.metrics.get("test") or result.metrics.get("val") or {}).get("authentication")
    if auth:
        parts = [f"{k}={v:.4g}" for k, v in auth.items() if isinstance(v, float)]
        console.print("authentication: " + ", ".join(parts))
    console.print(f"[green]model[/] {result.model_path}")
