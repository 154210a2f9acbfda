"""Diarization commands: `diarize` (who spoke when, per file) and `diarize-eval` (DER on
synthetic conversations of real speech)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from voxid.cli.recog_cmds import Files, ModelOpt, RegistryOpt, ThresholdOpt, _shown
from voxid.errors import ConfigError, VoxidError, printable, reason

NumOpt = Annotated[
    int | None,
    typer.Option("--num-speakers", min=1, help="The number of speakers, when known."),
]
MaxOpt = Annotated[
    int | None,
    typer.Option("--max-speakers", min=1, help="The most speakers to find (default 8)."),
]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _stems(files: list[Path]) -> list[str]:
    """One output name per file: the stem, with a number where two files share one."""
    seen: dict[str, int] = {}
    out = []
    for f in files:
        stem = f.stem or "audio"
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def diarize(
    ctx: typer.Context,
    files: Files,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the outputs.")] = Path(
        "diarization"
    ),
    model: ModelOpt = "base",
    registry: RegistryOpt = "speakers.db",
    num_speakers: NumOpt = None,
    max_speakers: MaxOpt = None,
    threshold: ThresholdOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Who spoke when in each FILE: writes OUT/<stem>.rttm, .json and .png (timeline).

    Speakers who match someone enrolled in the registry (the model's calibrated threshold)
    get that name; the others are SPEAKER_00, SPEAKER_01, ... Files that cannot be read
    are skipped with the reason; the exit status is 1 when none could be diarized.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from voxid.audio import audio_info
    from voxid.cli.recog_cmds import _named, _recognizer
    from voxid.diarization.plot import plot_timeline

    if num_speakers is not None and max_speakers is not None:
        raise ConfigError("--num-speakers and --max-speakers: give one or the other")
    rec = _recognizer(model, registry, threshold, _named(ctx))
    rec.speakers()  # a named registry that does not exist is one error, not one per file
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    done: dict[str, dict] = {}
    failed: dict[str, str] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
        TimeRemainingColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
        transient=True,
    ) as bar:
        for path, stem in zip(files, _stems(files), strict=True):
            try:
                total = audio_info(path).duration
            except VoxidError:
                total = None  # the decoder says why below
            task = bar.add_task(printable(path.name)[:40], total=total or 1.0)
            try:
                result = rec.diarize(
                    str(path),
                    num_speakers=num_speakers,
                    max_speakers=max_speakers,
                    on_progress=lambda s, t=task: bar.update(t, completed=s),
                )
            except VoxidError as exc:
                failed[str(path)] = reason(exc, path)
                bar.remove_task(task)
                console.print(f"skipped {_shown(path)}: {_shown(reason(exc, path))}")
                continue
            bar.remove_task(task)
            data = {"file": str(path), **result.to_dict()}
            _write(out / f"{stem}.json", json.dumps(data, indent=2) + "\n")
            _write(out / f"{stem}.rttm", result.to_rttm(stem))
            plot_timeline(result, out / f"{stem}.png", title=f"{path.name}: who spoke when")
            done[str(path)] = data
            if not as_json:
                who = (
                    ", ".join(f"{s.label} {s.speech_s:.1f} s" for s in result.speakers)
                    or "no speech"
                )
                console.print(
                    f"{_shown(path)}: {result.num_speakers} speaker(s), "
                    f"{len(result.segments)} turns ({_shown(who)}) -> {_shown(out / stem)}.*",
                    highlight=False,
                )
    if as_json:
        print(json.dumps({"out": str(out), "files": done, "failed": failed}))
    if not done:
        raise typer.Exit(1)


def diarize_eval(
    data: Annotated[Path, typer.Option("--data", help="The shared corpora folder.")] = Path(
        os.environ.get("VOXID_SHARED_DATA", "../shared/data")
    ),
    model: ModelOpt = "base",
    n: Annotated[int, typer.Option("--n", min=1, help="Conversations to generate.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the conversations.")] = 18,
    known_count: Annotated[
        bool, typer.Option("--known-count", help="Give the pipeline the true speaker count.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """DER (pyannote.metrics, collar 0.25 s) and speaker-count accuracy on synthetic
    conversations of speakers the base model never trained on (asc30 00000021-30 and
    VoxForge), 2-5 speakers, pauses, overlap and a noise bed at 10-30 dB SNR."""
    from voxid.diarization import evaluate
    from voxid.diarization.synth import make_conversations, pool
    from voxid.inference.recognizer import Recognizer

    if not (data / "asc30" / "manifest.csv").is_file():
        raise ConfigError(f"{data}: no asc30/manifest.csv (give --data ../shared/data)")
    pools = [pool(data / "asc30", [f"{i:08d}" for i in range(21, 31)], "asc30-")]
    if (data / "voxforge" / "manifest.csv").is_file():
        pools.append(pool(data / "voxforge", None, "vf-"))
    noise = sorted((data / "noise").glob("*.wav"))
    rec = Recognizer.load(model, registry=None)
    rows = []
    for conv in make_conversations(pools, n, seed, noise_files=noise):
        hyp = rec.diarize(
            conv.audio, sr=conv.sr, num_speakers=len(conv.speakers) if known_count else None
        )
        rows.append({"file_id": conv.file_id, **evaluate.score(conv.turns, hyp)})
    summary = evaluate.summarize(rows)
    if as_json:
        print(json.dumps({"summary": summary, "conversations": rows}))
        return
    from rich.console import Console

    Console().print(
        f"{summary['conversations']} conversations: DER {100 * summary['der']:.1f} % (missed "
        f"{100 * summary['missed']:.1f}, false alarm {100 * summary['false_alarm']:.1f}, "
        f"confusion {100 * summary['confusion']:.1f}); speaker count exact "
        f"{100 * summary['count_exact']:.0f} %",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the voxid app."""
    app.command()(diarize)
    app.command("diarize-eval")(diarize_eval)
