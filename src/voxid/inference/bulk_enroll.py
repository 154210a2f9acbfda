"""Bulk enrolment from a manifest: `voxid enroll --from manifest.csv`.

The manifest is a CSV file with the columns ``path,speaker`` (others are ignored); paths
are relative to the manifest's folder. Files are embedded in batches, and each batch is
written in one registry transaction (`BaseRegistry.add_many`), so an interrupted run
leaves whole batches behind; every embedding records its file, so running it again skips
the files already enrolled. A file that cannot be read, or a bad speaker name, is skipped
and reported with a one-line reason; the rest are enrolled.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxid.errors import ConfigError, RegistryError, reason, require_positive
from voxid.inference.registry import Enrolment, validate_name

#: Files embedded and written per transaction.
DEFAULT_BATCH_FILES = 64


@dataclass
class BulkReport:
    """What a bulk enrolment did: files and speakers enrolled, files already enrolled
    (skipped on a re-run), and `(file, reason)` for every file skipped as bad."""

    enrolled_files: int = 0
    speakers: set[str] = field(default_factory=set)
    already: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "enrolled_files": self.enrolled_files,
            "speakers": len(self.speakers),
            "already_enrolled": self.already,
            "skipped": [{"file": f, "reason": r} for f, r in self.failed],
        }


def read_manifest(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """`(absolute file path, speaker)` rows of a manifest; ConfigError naming the file and
    line for a missing column or an empty field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 CSV manifest") from None
    reader = csv.DictReader(text.splitlines())
    missing = {"path", "speaker"} - set(reader.fieldnames or [])
    if missing:
        raise ConfigError(
            f"{path}: manifest needs the columns path,speaker "
            f"(missing {', '.join(sorted(missing))})"
        )
    rows = []
    for line, row in enumerate(reader, start=2):
        file, speaker = (row.get("path") or "").strip(), (row.get("speaker") or "").strip()
        if not file or not speaker:
            raise ConfigError(f"{path}:{line}: empty path or speaker")
        rows.append((str((path.parent / file).resolve()), speaker))
    return rows


def enroll_manifest(
    recognizer: Any,
    manifest: str | os.PathLike[str],
    *,
    batch_files: int = DEFAULT_BATCH_FILES,
    progress: bool | None = None,
) -> BulkReport:
    """Enrol every file of `manifest` under its speaker with `recognizer`'s model and
    registry; returns a `BulkReport`. Resumable: files already enrolled are skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    require_positive("batch size", batch_files, integer=True)
    recognizer._require_embeddings("enrol")
    rows = read_manifest(manifest)
    report = BulkReport()
    good = []
    for file, speaker in rows:
        try:
            good.append((file, validate_name(speaker)))
        except RegistryError as exc:
            report.failed.append((file, str(exc)))
    registry = recognizer.registry
    done = registry.enrolled_sources([f for f, _ in good])
    report.already = sum(f in done for f, _ in good)
    todo = [(f, s) for f, s in good if f not in done]
    show = sys.stderr.isatty() if progress is None else progress
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not show, transient=True) as bar:
        task = bar.add_task("enrolling", total=len(todo))
        for start in range(0, len(todo), batch_files):
            batch = todo[start : start + batch_files]
            errors: list[tuple[str, str]] = []
            embs = recognizer.embed_many([f for f, _ in batch], progress=False, errors=errors)
            report.failed += [(f, reason(r, f)) for f, r in errors]
            by_speaker: dict[str, tuple[list[np.ndarray], list[str]]] = {}
            for (file, speaker), emb in zip(batch, embs, strict=True):
                if emb[0] == emb[0]:  # NaN marks a file embed_many skipped
                    rows_, files = by_speaker.setdefault(speaker, ([], []))
                    rows_.append(emb)
                    files.append(file)
            if by_speaker:
                registry.add_many(
                    [Enrolment(s, np.stack(e), sources=f) for s, (e, f) in by_speaker.items()]
                )
                report.enrolled_files += sum(len(f) for _, f in by_speaker.values())
                report.speakers |= set(by_speaker)
            bar.advance(task, len(batch))
    if report.enrolled_files:
        recognizer.warn_open_set()
    return report
