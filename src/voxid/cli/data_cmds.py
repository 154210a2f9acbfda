"""Data commands: `prepare`, `spectrograms`, `eda`, `demo-corpus`."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from voxid.errors import ConfigError, printable

FEATURE_KINDS = ("logmel", "fbank", "image", "mfcc", "waveform")


def _ratios(text: str) -> tuple[float, ...]:
    """`--split` fractions; they must add up to 1 (or percentages to 100), since silently
    rescaling a typo (1.2,0.1) would give splits nobody asked for.

    >>> _ratios("0.8,0.1,0.1"), _ratios("90/10")
    ((0.8, 0.1, 0.1), (0.9, 0.1))
    """
    try:
        vals = tuple(float(v) for v in text.replace("/", ",").split(","))
    except ValueError:
        raise ConfigError(f"--split: expected fractions like 0.8,0.1,0.1, got {text!r}") from None
    if sum(vals) > 1.5:  # percentages: 80,10,10
        vals = tuple(v / 100 for v in vals)
    if any(not 0 <= v <= 1 for v in vals) or abs(sum(vals) - 1) > 1e-6:
        raise ConfigError(
            f"--split: fractions between 0 and 1 that add up to 1 (or percentages that add up "
            f"to 100), like 0.8,0.1,0.1; got {text!r}"
        )
    return vals


def _corpus(
    data: list[Path], speakers, exclude, split, split_by, rule, val_frac, unseen, seed, heldout=0
):
    from voxid.data import (
        assign_splits,
        combine,
        hold_out_for_verification,
        hold_out_speakers,
        load_corpus,
        val_from_train,
    )

    corpus = combine([load_corpus(d) for d in data])
    if speakers or exclude:
        corpus = corpus.filter_speakers(speakers, exclude)
        if not len(corpus):
            raise ConfigError("speakers: the filters leave no speaker")
    corpus = assign_splits(corpus, ratios=_ratios(split), by=split_by, seed=seed, rule=rule)
    if val_frac:
        corpus = val_from_train(corpus, val_frac, seed=seed)
    if unseen:
        corpus = hold_out_speakers(corpus, unseen)
    if heldout:
        corpus = hold_out_for_verification(corpus, heldout, seed=seed)
    return corpus


def _thin_split_warning(corpus) -> str | None:
    """A warning when training speakers have fewer than 2 files in val or test, else None.

    One val file per speaker makes early stopping and the reported accuracy a coin toss
    (a premature stop), so say so before training.

    >>> from pathlib import Path
    >>> from voxid.data.corpus import Corpus, CorpusItem
    >>> c = Corpus([CorpusItem(Path(f"/{i}.wav"), "ann", s) for i, s in enumerate("tvv")])
    >>> _thin_split_warning(c) is None
    True
    """
    per = Counter((it.speaker, it.split) for it in corpus.items if it.split is not None)
    trained = {spk for spk, split in per if split == "train"}
    thin: set[str] = set()
    for split in ("val", "test"):
        # A split no training speaker is in holds other voices (split by speaker): counts
        # of files per training speaker mean nothing there.
        if any(per[spk, split] for spk in trained):
            thin |= {spk for spk in trained if per[spk, split] < 2}
    if not thin:
        return None
    return (
        f"{len(thin)} of {len(trained)} speakers have fewer than 2 files in val or test; "
        "early stopping and accuracy will be noisy: try --split 0.6,0.2,0.2"
    )


def _print_report(report, console) -> None:
    from rich.markup import escape

    d = report.to_dict()
    console.print(
        f"[bold]{escape(d['out_path'])}[/]: {d['files_used']}/{d['files']} files, "
        f"{d['items']} items ({d['augmented']} augmented, {d['oversampled']} "
        f"oversampled copies), {d['hours']:.3f} h of audio "
        f"({d['kept_hours']:.3f} h after VAD) in {d['elapsed_s']:.1f} s "
        f"({d['realtime_factor']:.0f}x real time)"
    )
    console.print("splits: " + ", ".join(f"{k} {v}" for k, v in d["items_per_split"].items()))
    if d["unassigned"]:
        console.print(f"{d['unassigned']} files matched no split rule and were left out")
    if report.skipped:
        console.print(f"[yellow]{len(report.skipped)} skipped:[/]")
        for path, reason in report.skipped:
            # one line per file, never wrapped: easy to grep and to copy a path from
            line = f"{escape(printable(path))}: {escape(printable(reason))}"
            console.print(f"  {line}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the voxid app."""

    @app.command()
    def prepare(
        data: Annotated[list[Path], typer.Argument(help="Corpus folders or CSV manifests.")],
        out: Annotated[
            Path,
            typer.Option(
                "-o",
                "--out",
                help="The .h5 store to write (an earlier voxid store there is replaced; any other "
                "file only with --force).",
            ),
        ],
        features: Annotated[
            str, typer.Option(help="logmel | fbank | image | mfcc | waveform")
        ] = "logmel",
        vad: Annotated[
            str,
            typer.Option(
                "--vad",
                help="Speech detection: silero (tells speech from noise and hum) | energy (frames "
                "near the loudest) | off.",
            ),
        ] = "silero",
        no_vad: Annotated[
            bool, typer.Option("--no-vad", help="Keep silences (as --vad off).")
        ] = False,
        vad_threshold: Annotated[
            float, typer.Option(help="Energy VAD threshold, dB re the loudest frame.")
        ] = -35.0,
        vad_floor: Annotated[
            float,
            typer.Option(help="Frames quieter than this (dBFS) are never speech, by either VAD."),
        ] = -70.0,
        chunk: Annotated[
            float | None, typer.Option(help="Chunk seconds (default 1.0; image: whole file).")
        ] = None,
        hop: Annotated[
            float | None, typer.Option(help="Chunk hop in seconds (default: no overlap).")
        ] = None,
        tail: Annotated[str, typer.Option(help="Last partial chunk: pad | keep | drop.")] = "pad",
        min_tail: Annotated[float, typer.Option(help="Shortest tail kept, seconds.")] = 0.5,
        no_chunk: Annotated[bool, typer.Option("--no-chunk", help="Store whole files.")] = False,
        normalize: Annotated[
            str | None, typer.Option(help="Level normalisation: peak | rms.")
        ] = None,
        max_seconds: Annotated[
            float,
            typer.Option(
                min=0.0,
                help="Skip recordings longer than this (read from the header, so long files "
                "cost nothing); 0 means no limit.",
            ),
        ] = 600.0,
        split: Annotated[
            str,
            typer.Option(
                help="train,val[,test] fractions for files without a manifest split, adding up "
                "to 1 (or percentages: 90,10)."
            ),
        ] = "0.8,0.1,0.1",
        split_by: Annotated[
            str, typer.Option(help="utterance (per speaker) | speaker.")
        ] = "utterance",
        split_rule: Annotated[
            str | None,
            typer.Option(
                help="Column rule, e.g. 'take:01,02,03=train;04=test'; split names are free. "
                "Files it does not match are left out (counted); '*=train' catches the rest."
            ),
        ] = None,
        val_from_train: Annotated[
            float | None,
            typer.Option(
                help="Move this fraction of each speaker's train files to val (per speaker)."
            ),
        ] = None,
        speakers: Annotated[
            str | None, typer.Option(help="Only these speakers: names, ranges a-b.")
        ] = None,
        exclude_speakers: Annotated[
            str | None, typer.Option(help="Leave out these speakers.")
        ] = None,
        unseen_speakers: Annotated[
            str | None,
            typer.Option(
                help="Keep only the test files of these speakers (never seen in training)."
            ),
        ] = None,
        heldout_speakers: Annotated[
            int,
            typer.Option(
                min=0,
                help="Put every file of this many random speakers in a 'heldout' split: voices "
                "never trained on, for choosing epochs by verification EER (monitor: val_eer).",
            ),
        ] = 0,
        members: Annotated[
            str | None, typer.Option(help="Member speakers (authentication).")
        ] = None,
        augment: Annotated[
            str, typer.Option(help="Offline augmentations for train, comma-separated.")
        ] = "",
        speaker_augment: Annotated[
            str,
            typer.Option(
                help="Offline augmentations whose copies count as new speakers "
                "(<speaker>@<augmentation>), e.g. speed_0.9,speed_1.1; '+' chains them into "
                "one, e.g. speed_0.8+vtlp_1.25 (train files only; evaluate leaves these "
                "pseudo-voices out of the closed set)."
            ),
        ] = "",
        noise_dir: Annotated[
            Path | None, typer.Option(help="Noise recordings for noise_real.")
        ] = None,
        oversample: Annotated[bool, typer.Option(help="Copy minority-class train items.")] = False,
        workers: Annotated[int, typer.Option(min=0, help="Worker processes.")] = 2,
        seed: Annotated[int, typer.Option(help="Seed for splits and augmentation.")] = 0,
        force: Annotated[
            bool, typer.Option("--force", help="Replace --out even when it is not a voxid store.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    ) -> None:
        """Decode, clean, chunk and featurise corpora into one HDF5 store.

        With several corpora, speaker ids become <corpus folder>/<speaker>. Splits: a
        --split-rule wins, then a manifest's split column, then --split fractions.
        """
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from voxid.data.prepare import PrepareConfig
        from voxid.data.prepare import prepare as run
        from voxid.features import FeatureConfig
        from voxid.vad import ChunkConfig, VadConfig

        if features not in FEATURE_KINDS:
            raise ConfigError(
                f"features: must be one of {', '.join(FEATURE_KINDS)}, got {features!r}"
            )
        if vad not in ("silero", "energy", "off"):
            raise ConfigError(f"--vad: must be silero, energy or off, got {vad!r}")
        enabled = vad != "off" and not no_vad
        vcfg = VadConfig(
            enabled=enabled,
            method=vad if enabled else "silero",
            threshold_db=vad_threshold,
            floor_dbfs=vad_floor,
        )
        fcfg = getattr(FeatureConfig, features)()
        if no_chunk or (features == "image" and chunk is None):
            ccfg = None
        else:
            ccfg = ChunkConfig(
                seconds=chunk or 1.0, hop_seconds=hop, tail=tail, min_tail_seconds=min_tail
            )
        cfg = PrepareConfig(
            feature=fcfg,
            vad=vcfg,
            chunk=ccfg,
            normalize=normalize,
            augment=tuple(a.strip() for a in augment.split(",") if a.strip()),
            speaker_augment=tuple(a.strip() for a in speaker_augment.split(",") if a.strip()),
            noise_dir=str(noise_dir) if noise_dir else None,
            oversample=oversample,
            members=members,
            seed=seed,
            max_seconds=max_seconds or None,
        )
        corpus = _corpus(
            data,
            speakers,
            exclude_speakers,
            split,
            split_by,
            split_rule,
            val_from_train,
            unseen_speakers,
            seed,
            heldout_speakers,
        )
        if warning := _thin_split_warning(corpus):
            print(f"voxid: warning: {warning}", file=sys.stderr, flush=True)
        console = Console(stderr=as_json)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=as_json,
        ) as bar:
            task = bar.add_task("preparing", total=len(corpus))
            report = run(
                corpus,
                out,
                cfg,
                workers=workers,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                force=force,
            )
        if as_json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            _print_report(report, console)

    @app.command()
    def spectrograms(
        data: Annotated[Path, typer.Argument(help="Corpus folder or CSV manifest.")],
        out: Annotated[Path, typer.Argument(help="Output folder (speaker folders of PNGs).")],
        vad: Annotated[bool, typer.Option("--vad/--no-vad", help="Remove silences first.")] = True,
    ) -> None:
        """Write one mel-spectrogram PNG per file, exactly as the image CNN sees it."""
        from rich.console import Console
        from rich.markup import escape

        from voxid.data import load_corpus
        from voxid.eda import write_spectrogram_images

        written, skipped = write_spectrogram_images(load_corpus(data), out, vad=vad)
        console = Console()
        console.print(f"{written} images in {escape(str(out))}")
        for path, reason in skipped:
            line = f"{escape(printable(path))}: {escape(printable(reason))}"
            console.print(f"[yellow]skipped[/] {line}", soft_wrap=True)

    @app.command()
    def eda(
        data: Annotated[Path, typer.Argument(help="Corpus folder, CSV manifest or .h5 store.")],
        out: Annotated[Path, typer.Option("-o", "--out", help="Report folder.")] = Path("eda"),
        max_files: Annotated[int, typer.Option(help="Files decoded for spectra and t-SNE.")] = 600,
        seed: Annotated[int, typer.Option(help="Seed for sampling and t-SNE.")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    ) -> None:
        """Describe a corpus or store: balance, durations, spectra, t-SNE; report.md + PNGs."""
        from voxid.eda import run_eda

        summary = run_eda(data, out, max_files=max_files, seed=seed)
        if as_json:
            print(json.dumps(summary, indent=2))
        else:
            print(f"report: {out / 'report.md'}")

    @app.command("demo-corpus")
    def demo_corpus(
        out: Annotated[Path, typer.Argument(help="Output folder.")],
        speakers: Annotated[
            int | None, typer.Option(help="Number of voices (1-23; default: all).")
        ] = None,
        sentences: Annotated[int, typer.Option(help="Sentences per voice.")] = 30,
    ) -> None:
        """Synthesise a small multi-speaker corpus with espeak-ng and flite (demos, tests)."""
        from voxid.demo import synthesize_corpus

        corpus = synthesize_corpus(out, n_speakers=speakers, n_sentences=sentences)
        print(
            f"{len(corpus.speakers)} speakers x {corpus.files_per_speaker} files in {corpus.root}"
        )
