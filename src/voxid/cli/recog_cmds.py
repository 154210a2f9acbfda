"""Recogniser commands: `enroll`, `verify`, `identify`, `speakers`, `embed`, `export`,
`calibrate`, `fit-lda`. Each takes `--json` for scripts; the model also comes from $VOXID_MODEL and
the registry from $VOXID_REGISTRY (default speakers.db).

Only `enroll` creates a registry. A registry named with -r or $VOXID_REGISTRY that does not
exist is an error for the commands that read it; the default ./speakers.db, when missing,
means nobody is enrolled yet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer

from voxid.errors import ConfigError, printable, reason

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar="VOXID_MODEL",
        show_envvar=True,
        help="Run folder, .ckpt, model.pt or .onnx file, or a shipped model (voxid models).",
    ),
]
RegistryOpt = Annotated[
    str,
    typer.Option(
        "--registry",
        "-r",
        envvar="VOXID_REGISTRY",
        show_envvar=True,
        help="SQLite file of enrolled speakers, or postgresql://user@host:port/db (only "
        "enroll creates it).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        help="Decision threshold (default: the calibrated one stored with the model).",
    ),
]
Files = Annotated[list[Path], typer.Argument(help="Audio files (any format voxid reads).")]
IncludeTrainingOpt = Annotated[
    bool,
    typer.Option(
        "--include-training",
        help="Also offer the model's training speakers (scored against class weights, which "
        "run below the threshold calibrated on enrolments; enrol them to be sure).",
    ),
]


def _recognizer(
    model: str, registry: str | None, threshold: float | None = None, require: bool = False
):
    from voxid.inference.recognizer import Recognizer

    return Recognizer.load(model, registry, threshold=threshold, require_registry=require)


def _named(ctx: typer.Context, name: str = "registry") -> bool:
    """Whether option `name` was given on the command line or through its environment
    variable, here or on the `speakers` group, rather than left at its default."""
    contexts = [ctx] + ([ctx.parent] if ctx.parent is not None else [])
    return any(
        name in c.params
        and getattr(c.get_parameter_source(name), "name", None) in ("COMMANDLINE", "ENVIRONMENT")
        for c in contexts
    )


def _npy_bytes(array) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _shown(text: Any) -> str:
    """`text` for a rich console line: control characters escaped, markup taken literally."""
    from rich.markup import escape

    return escape(printable(text))


def _emit(as_json: bool, payload: Any, human: str) -> None:
    if as_json:
        print(json.dumps(payload))
    else:
        from rich.console import Console

        Console().print(human)


def _where(registry: str) -> str:
    from voxid.inference.registry import is_url

    if is_url(registry):
        from voxid.inference.registry import redact

        return redact(registry)
    return registry


def enroll(
    name: Annotated[str | None, typer.Argument(help="Speaker name.")] = None,
    files: Annotated[
        list[Path] | None, typer.Argument(help="Audio files (any format voxid reads).")
    ] = None,
    model: ModelOpt = "base",
    registry: RegistryOpt = "speakers.db",
    replace: Annotated[bool, typer.Option(help="Drop earlier utterances.")] = False,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Enrol every file of a CSV manifest (columns path,speaker; paths relative "
            "to it) in batches; re-running skips the files already enrolled.",
        ),
    ] = None,
    batch: Annotated[int, typer.Option(help="Files per batch (one transaction each).", min=1)] = 64,
    as_json: JsonOpt = False,
) -> None:
    """Enrol NAME from one or more utterances (added to earlier ones unless --replace), or
    many speakers at once with --from manifest.csv."""
    if manifest is not None:
        if name is not None or files:
            raise ConfigError("enroll --from: give the manifest alone, not NAME or FILES")
        if replace:
            raise ConfigError("enroll --from: --replace is not supported with a manifest")
        from voxid.inference.bulk_enroll import enroll_manifest

        rep = enroll_manifest(_recognizer(model, registry), manifest, batch_files=batch)
        _emit(
            as_json,
            {**rep.to_dict(), "registry": _where(registry)},
            f"enrolled {rep.enrolled_files} files of {len(rep.speakers)} speakers from "
            f"{_shown(manifest)} in {_shown(_where(registry))} ({rep.already} already enrolled, "
            f"{len(rep.failed)} skipped)"
            + "".join(f"\nskipped {_shown(f)}: {_shown(r)}" for f, r in rep.failed),
        )
        return
    if name is None or not files:
        raise ConfigError("enroll: give NAME and one or more FILES, or --from manifest.csv")
    rec = _recognizer(model, registry).enroll(name, [str(f) for f in files], replace=replace)
    _emit(
        as_json,
        {
            "name": rec.name,
            "n_utterances": rec.n_utterances,
            "model_fingerprint": rec.model_fingerprint,
            "registry": _where(registry),
        },
        f"enrolled [bold]{rec.name}[/] ({rec.n_utterances} utterances) in {_where(registry)}",
    )


def verify(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Claimed speaker.")],
    file: Annotated[Path, typer.Argument(help="Audio file.")],
    model: ModelOpt = "base",
    registry: RegistryOpt = "speakers.db",
    threshold: ThresholdOpt = None,
    include_training: IncludeTrainingOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Check whether FILE is spoken by NAME (cosine score against the threshold)."""
    rec = _recognizer(model, registry, threshold, _named(ctx))
    res = rec.verify(name, str(file), include_training=include_training)
    word = "[green]accepted[/]" if res.accepted else "[red]rejected[/]"
    _emit(
        as_json,
        res.to_dict(),
        f"{word}: {res.name} score {res.score:.3f} (threshold {res.threshold:.3f}, {res.source})",
    )


def identify(
    ctx: typer.Context,
    files: Files,
    model: ModelOpt = "base",
    registry: RegistryOpt = "speakers.db",
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Candidates to list.")] = 5,
    threshold: ThresholdOpt = None,
    include_training: Annotated[
        bool,
        typer.Option(
            "--include-training/--enrolled-only",
            help="Also rank the model's training speakers (their class-weight scores run "
            "below the threshold calibrated on enrolments).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Name the enrolled speaker of each FILE, or "unknown" when nobody passes."""
    rec = _recognizer(model, registry, threshold, _named(ctx))
    results = {
        str(f): rec.identify(str(f), top_k=top_k, include_training=include_training) for f in files
    }
    if as_json:
        print(json.dumps({path: r.to_dict() for path, r in results.items()}))
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    for path, r in results.items():
        ranked = ", ".join(f"{escape(c.name)} {c.score:.3f}" for c in r.candidates)
        console.print(
            f"{escape(printable(path))}: [bold]{escape(r.name)}[/] ({ranked}; threshold "
            f"{r.threshold:.3f})"
        )


speakers_app = typer.Typer(
    help="List or remove known speakers.", no_args_is_help=False, rich_markup_mode=None
)
SpeakersModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        envvar="VOXID_MODEL",
        help="The model (its training speakers are listed with --include-training).",
    ),
]
ListTrainingOpt = Annotated[
    bool,
    typer.Option("--include-training", help="Also list the model's training speakers (-m)."),
]


def _from_group(ctx: typer.Context, name: str, value: Any) -> Any:
    """The subcommand's option `name` when given on its own command line, else the `speakers`
    group's when given there (`speakers -r team.db remove alice`), else `value`.

    Both read the same environment variable and default, so only a command-line value on
    the group can differ from what the subcommand already has.
    """
    group = ctx.parent
    if _on_command_line(ctx, name) or group is None:
        return value
    if _on_command_line(group, name):
        return group.params[name]
    return value


class _Invocation(Protocol):
    """A click context, typer's or the `speakers` group's (typer's vendored click)."""

    def get_parameter_source(self, name: str) -> object: ...


def _on_command_line(ctx: _Invocation, name: str) -> bool:
    # By name: typer vendors its own click, whose ParameterSource is not click's.
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"


@speakers_app.callback(invoke_without_command=True)
def _speakers_default(
    ctx: typer.Context,
    model: SpeakersModelOpt = None,
    registry: RegistryOpt = "speakers.db",
    include_training: ListTrainingOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """List speakers when no subcommand is given; -m, -r, --include-training and --json
    here reach the subcommands too."""
    if ctx.invoked_subcommand is None:
        _list_speakers(model, registry, as_json, _named(ctx), include_training)


@speakers_app.command("list")
def list_speakers(
    ctx: typer.Context,
    model: SpeakersModelOpt = None,
    registry: RegistryOpt = "speakers.db",
    include_training: ListTrainingOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """List enrolled speakers (and, with --include-training, the model's training ones)."""
    _list_speakers(
        _from_group(ctx, "model", model),
        _from_group(ctx, "registry", registry),
        _from_group(ctx, "as_json", as_json),
        _named(ctx),
        _from_group(ctx, "include_training", include_training),
    )


def _list_speakers(
    model: str | None, registry: str, as_json: bool, named: bool, training: bool = False
) -> None:
    if training and not model:
        raise ConfigError("--include-training: name the model (-m / $VOXID_MODEL)")
    if model:
        rec = _recognizer(model, registry, require=named)
        rows = [
            (s.name, s.source, s.n_utterances, s.updated)
            for s in rec.speakers(include_training=training)
        ]
    else:
        from voxid.inference.registry import open_registry

        rows = [
            (r.name, "enrolled", r.n_utterances, r.updated)
            for r in open_registry(registry, None, create=False).speakers()
        ]
    if as_json:
        print(
            json.dumps(
                [{"name": n, "source": s, "n_utterances": k, "updated": u} for n, s, k, u in rows]
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} speakers")
    for col in ("name", "source", "utterances"):
        table.add_column(col)
    for n, s, k, _ in rows:
        table.add_row(n, s, str(k) if s == "enrolled" else "-")
    Console().print(table)


@speakers_app.command("remove")
def remove_speaker(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Enrolled speaker to remove.")],
    registry: RegistryOpt = "speakers.db",
    as_json: JsonOpt = False,
) -> None:
    """Remove an enrolled speaker and its stored embeddings."""
    from voxid.inference.registry import open_registry

    registry = _from_group(ctx, "registry", registry)
    open_registry(registry, None, create=False).remove(name)
    _emit(
        _from_group(ctx, "as_json", as_json),
        {"removed": name, "registry": _where(registry)},
        f"removed {name} from {_where(registry)}",
    )


def embed(
    files: Files,
    model: ModelOpt = "base",
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npy (N, D).")] = Path(
        "embeddings.npy"
    ),
    batch_size: Annotated[int, typer.Option(help="Chunks per forward pass.")] = 64,
    as_json: JsonOpt = False,
) -> None:
    """Embed FILEs into one .npy (row i is file i; a NaN row marks a skipped file)."""

    from voxid.io import atomic_write

    rec = _recognizer(model, None)
    errors: list[tuple[str, str]] = []
    embs = rec.embed_many([str(f) for f in files], batch_size=batch_size, errors=errors)
    atomic_write(out, lambda tmp: tmp.write_bytes(_npy_bytes(embs)))
    _emit(
        as_json,
        {
            "out": str(out),
            "shape": list(embs.shape),
            "skipped": [{"file": f, "reason": r} for f, r in errors],
        },
        f"wrote {out} {embs.shape}"
        + "".join(f"\nskipped {_shown(f)}: {_shown(reason(r, f))}" for f, r in errors),
    )


def export(
    run: Annotated[str, typer.Argument(help="Run folder or checkpoint.")],
    onnx: Annotated[Path, typer.Option("--onnx", help="Output .onnx file.")],
    int8: Annotated[bool, typer.Option("--int8", help="Dynamic int8 weights.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export the front-end and encoder to ONNX (waveform in, embedding out)."""
    import warnings

    from voxid.inference.export import export_onnx

    with warnings.catch_warnings():
        # PyTorch's tracer and exporter notes (stft's return_complex, constant folding, GRU
        # batch sizes) are for its developers; the export checks its own output against
        # torch and reports the difference below.
        warnings.filterwarnings("ignore", module=r"(torch|onnx|onnxscript|onnxruntime)(\.|$)")
        rep = export_onnx(run, onnx, int8=int8)
    _emit(
        as_json,
        rep.to_dict(),
        f"wrote {rep.path} ({rep.precision}, {rep.size_mb} MB, {rep.exporter} exporter, opset "
        f"{rep.opset}); vs torch: max |diff| {rep.max_abs_diff:.2e}, min cosine "
        f"{rep.min_cosine:.6f}",
    )


def calibrate(
    data: Annotated[Path, typer.Option("--data", help="HDF5 store (voxid prepare).")],
    run: Annotated[
        str, typer.Argument(help="Run folder or checkpoint, or a shipped model (with --out).")
    ] = "base",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Save a calibrated copy of the model here (.pt) and leave RUN as it is; "
            "needed for a shipped model, which is read-only.",
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Held-out split to use.")] = "val",
    far: Annotated[float, typer.Option(help="Target false-acceptance rate.")] = 0.01,
    use_eer: Annotated[bool, typer.Option("--eer", help="Threshold at the EER.")] = False,
    n_enroll: Annotated[
        int | None,
        typer.Option(help="Utterances per enrolment (default: 3, fewer if the split is small)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Save the threshold even when the split has too few trials for the target "
            "FAR (3 / FAR non-target trials; 10 of each kind for --eer).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Choose the verification threshold on held-out data and store it with the model.

    Every utterance is tested against enrolments that leave it out; the report gives the
    trial counts and 95 % intervals, and nothing is saved when the trials are too few.
    """
    from voxid.calibration import calibrate as run_calibration

    copied = None
    if out is not None:
        import shutil

        from voxid.checkpoint import resolve_run

        source = resolve_run(run)
        if source.suffix != ".pt":
            raise ConfigError(f"--out: copies a model.pt file; {source.name} is a {source.suffix}")
        out.parent.mkdir(parents=True, exist_ok=True)
        copied = None if out.exists() else out
        shutil.copyfile(source, out)
        run = str(out)

    try:
        rep = run_calibration(
            run, data, split=split, far=None if use_eer else far, n_enroll=n_enroll, force=force
        )
    except BaseException:
        if copied is not None:
            copied.unlink(missing_ok=True)  # no uncalibrated copy under the name asked for
        raise
    _emit(as_json, rep.to_dict(), _calibration_line(rep))


def _pct(rate: float, ci: tuple[float, float]) -> str:
    return f"{rate:.2%} (95% CI {ci[0]:.2%}-{ci[1]:.2%})"


def _calibration_line(rep) -> str:
    warning = (
        ""
        if rep.supported
        else f"; [yellow]not supported by the trials[/] (needs {rep.needed_nontarget} "
        f"non-target"
        + (f" and {rep.needed_target} target" if rep.needed_target else "")
        + " trials)"
    )
    saved = f"saved to {', '.join(rep.saved_to)}" if rep.saved_to else "not saved"
    return (
        f"threshold {rep.threshold:.4f} ({rep.kind}) from {rep.n_target} target trials "
        f"({rep.n_target_speakers} speakers) and {rep.n_nontarget} non-target trials "
        f"({rep.n_speakers} speakers), {rep.n_utterances} utterances, enrolled with "
        f"{rep.n_enroll} each, leave-one-out: FAR {_pct(rep.far, rep.far_ci)}, "
        f"FRR {_pct(rep.frr, rep.frr_ci)}; held out (2-fold): "
        f"FAR {_pct(rep.heldout_far, rep.heldout_far_ci)}, "
        f"FRR {_pct(rep.heldout_frr, rep.heldout_frr_ci)}; EER {rep.eer:.2%}{warning}; {saved}"
    )


def fit_lda(
    run: Annotated[str, typer.Argument(help="Run folder or checkpoint.")],
    data: Annotated[Path, typer.Option("--data", help="HDF5 store (voxid prepare).")],
    split: Annotated[str, typer.Option(help="Split of labelled speakers to fit on.")] = "train",
    dim: Annotated[
        int | None, typer.Option(help="Output size (default: min(embedding, speakers - 1)).")
    ] = None,
    cohort: Annotated[
        bool,
        typer.Option(
            "--cohort/--no-cohort",
            help="Also store the speakers' mean embeddings, and AS-norm every score against "
            "them (check with evaluate --verify: it helps some models, not all).",
        ),
    ] = False,
    adapt: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Keep the model's LDA and adapt it to the store's speakers, recordings of "
            "your own domain (tens of voices), at this weight (0-1, 0.2 measured best): "
            "their within-speaker scatter is whitened on top, their means join the cohort.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit an LDA projection of the embeddings on known speakers and store it with the model.

    Every embedding the run gives is projected from then on (re-export ONNX files and
    re-enrol speakers afterwards); with a cohort, scores are AS-normed. A calibrated
    threshold is cleared: calibrate again. With --adapt, a model that has an LDA (the
    shipped base: work on a copy) is tailored to your recordings without training.
    """
    from voxid.lda import adapt_run_lda, fit_run_lda

    if adapt is not None and (dim is not None or cohort):
        raise typer.BadParameter("--adapt keeps the model's LDA: no --dim or --cohort with it")
    rep = (
        fit_run_lda(run, data, split=split, dim=dim, cohort=cohort)
        if adapt is None
        else adapt_run_lda(run, data, weight=adapt, split=split)
    )
    cleared = (
        f"; cleared the calibrated threshold {rep.cleared_threshold:.4f}: run voxid calibrate"
        if rep.cleared_threshold is not None
        else ""
    )
    _emit(
        as_json,
        rep.to_dict(),
        ("LDA adapted, " if adapt is not None else "LDA ")
        + f"{rep.input_dim} -> {rep.dim} dims from {rep.n_items} items of {rep.n_speakers} "
        f"speakers ({rep.split}); "
        + (f"AS-norm cohort of {rep.cohort_size}; " if rep.cohort_size else "no cohort; ")
        + f"saved to {', '.join(rep.saved_to)}{cleared}",
    )


def models(as_json: JsonOpt = False) -> None:
    """List the models shipped with voxid (usable by name wherever a model is taken)."""
    from voxid.pretrained import DEFAULT_MODEL, available

    found = available()
    if as_json:
        print(json.dumps([{**m.to_dict(), "default": m.name == DEFAULT_MODEL} for m in found]))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(found)} shipped models (use the name as -m / MODEL)")
    for col in ("name", "size (MB)", "description"):
        table.add_column(col)
    for m in found:
        mark = " (default)" if m.name == DEFAULT_MODEL else ""
        table.add_row(m.name + mark, f"{m.size_mb:.1f}", m.description)
    console = Console()
    console.print(table)
    for m in found:
        console.print(f"{m.name}: {m.onnx.name}, {m.torch.name} and {m.card} in {m.onnx.parent}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the voxid app."""
    for fn in (enroll, verify, identify, embed, export, calibrate, models):
        app.command()(fn)
    app.command("fit-lda")(fit_lda)
    app.add_typer(speakers_app, name="speakers")
