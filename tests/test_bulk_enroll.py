"""`voxid enroll --from manifest.csv`: batched, resumable, bad rows skipped with a reason,
into SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from voxid.cli import app
from voxid.errors import ConfigError
from voxid.inference.registry import open_registry


def _run(*args: str) -> dict:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "speakers.db")
    return request.getfixturevalue("pg_url")


def test_manifest_enrolment_is_batched_and_resumable(speech_corpus, tmp_path, registry):
    voices = sorted(p.name for p in speech_corpus.iterdir() if p.is_dir())[:2]
    rows = ["path,speaker"]
    for v in voices:
        wavs = sorted((speech_corpus / v).glob("*.wav"))[:2]
        rows += [f"{w},{v}" for w in wavs]
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "broken.wav").write_bytes(b"not audio at all")
    rows += ["audio/broken.wav,carol", f"{speech_corpus / voices[0] / 'x.wav'},../etc"]
    manifest = tmp_path / "enrol.csv"
    manifest.write_text("\n".join(rows) + "\n")
    first = _run("enroll", "--from", str(manifest), "-r", registry, "--batch", "3", "--json")
    assert first["enrolled_files"] == 4 and first["speakers"] == 2
    skipped = {s["file"]: s["reason"] for s in first["skipped"]}
    assert len(skipped) == 2
    assert any(f.endswith("broken.wav") for f in skipped)  # relative to the manifest
    assert all("\n" not in r for r in skipped.values())
    reg = open_registry(registry, None)
    assert reg.names() == voices and reg.get(voices[0]).n_utterances == 2
    again = _run("enroll", "--from", str(manifest), "-r", registry, "--json")
    assert again["enrolled_files"] == 0 and again["already_enrolled"] == 4
    assert reg.get(voices[0]).n_utterances == 2  # nothing enrolled twice


def test_bad_manifests(tmp_path):
    from voxid.inference.bulk_enroll import read_manifest

    bad = tmp_path / "m.csv"
    bad.write_text("file,who\na.wav,alice\n")
    with pytest.raises(ConfigError, match=r"m\.csv: manifest needs the columns path,speaker"):
        read_manifest(bad)
    bad.write_text("path,speaker\na.wav,\n")
    with pytest.raises(ConfigError, match=r"m\.csv:2: empty path or speaker"):
        read_manifest(bad)
    with pytest.raises(ConfigError, match="cannot read the manifest"):
        read_manifest(tmp_path / "missing.csv")
