"""`voxid evaluate` (a run or checkpoint on a store or trial list) and `voxid compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from voxid.errors import ConfigError, DataError


def _load_report(path: Path) -> dict:
    file = path / "report.json" if path.is_dir() else path
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{file}: no such report (run voxid evaluate first)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: not a readable report.json ({exc})") from None


def register(app: typer.Typer) -> None:
    """Add this area's commands to the voxid app."""

    @app.command()
    def evaluate(
        run: Annotated[
            Path,
            typer.Argument(
                help="Run folder or checkpoint (model.pt, best.ckpt, model.npz), or a shipped "
                "model (voxid models)."
            ),
        ] = Path("base"),
        data: Annotated[
            Path | None, typer.Option("--data", "-d", help="Store (.h5) to evaluate on.")
        ] = None,
        split: Annotated[str, typer.Option(help="Split to test.")] = "test",
        speakers: Annotated[
            str | None,
            typer.Option(help="Only these speakers of the store (e.g. 00000021-00000030)."),
        ] = None,
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report.")] = Path(
            "report"
        ),
        verify: Annotated[
            bool, typer.Option("--verify", help="Verification on embeddings.")
        ] = False,
        trials: Annotated[
            Path | None, typer.Option(help="VoxCeleb-style trial list (with --verify).")
        ] = None,
        audio_root: Annotated[
            Path | None, typer.Option(help="Folder the trial list's paths are in.")
        ] = None,
        enroll_split: Annotated[
            str | None, typer.Option(help="Split to enrol speakers from.")
        ] = None,
        test_split: Annotated[
            str | None, typer.Option(help="Split to test (default: --split).")
        ] = None,
        n_enroll: Annotated[
            int | None, typer.Option(help="Files per speaker to enrol with.")
        ] = None,
        trial_mode: Annotated[str, typer.Option(help="'speakers' or 'pairs'.")] = "speakers",
        max_trials: Annotated[
            int, typer.Option(help="Pair trials sampled down to this many.")
        ] = 100_000,
        cohort: Annotated[
            Path | None,
            typer.Option(
                help="AS-norm cohort store (.h5); default: the model's own (voxid fit-lda)."
            ),
        ] = None,
        cohort_split: Annotated[str | None, typer.Option(help="AS-norm cohort split.")] = None,
        asnorm_top: Annotated[int, typer.Option(help="Top-N cohort scores for AS-norm.")] = 100,
        uncertainty: Annotated[
            bool, typer.Option("--uncertainty", help="MC dropout (K=20).")
        ] = False,
        mc_samples: Annotated[
            int, typer.Option(help="MC-dropout passes (implies --uncertainty).")
        ] = 0,
        entropy_threshold: Annotated[
            float | None, typer.Option(help="Flag entropy (nats).")
        ] = None,
        batch_size: Annotated[int, typer.Option(help="Items per forward pass.")] = 64,
        seed: Annotated[int, typer.Option(help="Seed for sampled trials and MC dropout.")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    ) -> None:
        """Evaluate a model and write report.json, report.md and plots to --out."""
        from rich.console import Console

        from voxid.evaluation import EvalOptions
        from voxid.evaluation import evaluate as run_evaluation

        options = EvalOptions(
            split=split, speakers=speakers, verify=verify, trials=trials, audio_root=audio_root,
            enroll_split=enroll_split, test_split=test_split, n_enroll=n_enroll,
            trial_mode=trial_mode, max_trials=max_trials, cohort=cohort,
            cohort_split=cohort_split, asnorm_top=asnorm_top,
            mc_samples=mc_samples or (20 if uncertainty else 0),
            entropy_threshold=entropy_threshold, batch_size=batch_size, seed=seed,
        )  # fmt: skip
        report = run_evaluation(run, data, out, options)
        if as_json:
            print(json.dumps(report["summary"], indent=2))
            return
        console = Console()
        console.print(_summary_table(report["summary"], str(run)))
        console.print(f"report: {out / 'report.md'}")

    @app.command()
    def compare(
        reports: Annotated[list[Path], typer.Argument(help="report.json files or report folders.")],
    ) -> None:
        """Show the main metrics of several evaluation reports side by side."""
        from rich.console import Console
        from rich.table import Table

        from voxid.evaluation import SUMMARY_KEYS

        if not reports:
            raise ConfigError("compare: give at least one report")
        loaded = [_load_report(p) for p in reports]
        table = Table(title="voxid evaluation reports")
        table.add_column("metric")
        for path, rep in zip(reports, loaded, strict=True):
            model = rep.get("summary", {}).get("model") or "?"
            table.add_column(f"{path}\n{model} ({rep.get('mode', '?')})", justify="right")
        keys = [k for k in SUMMARY_KEYS if any(r.get("summary", {}).get(k) is not None
                                               for r in loaded)]  # fmt: skip
        for key in keys:
            table.add_row(key, *[_fmt(key, r.get("summary", {}).get(key)) for r in loaded])
        Console(width=max(100, 28 * (len(reports) + 1))).print(table)


def _fmt(key: str, value: object) -> str:
    if value is None:
        return "-"
    if key in ("samples_per_second", "x_real_time"):
        return f"{value:.1f}"
    return f"{value:.4f}"


def _summary_table(summary: dict, title: str):
    from rich.table import Table

    from voxid.evaluation import SUMMARY_KEYS

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in SUMMARY_KEYS:
        if summary.get(key) is not None:
            table.add_row(key, _fmt(key, summary[key]))
    return table
