"""Diarization on conversations of two flite voices (built from recordings of real people):
the pipeline, RTTM, the CLI, the endpoint, and the page in a real browser. The shipped base
model embeds (it never heard these voices)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from voxid.diarization import (
    Diarization,
    DiarizationConfig,
    Segment,
    parse_rttm,
)
from voxid.diarization.cluster import cluster_embeddings
from voxid.errors import ConfigError
from voxid.inference.recognizer import Recognizer

SR = 16000
VOICES = ("ursula", "walter")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from voxid.demo import synthesize_corpus

    root = tmp_path_factory.mktemp("diar-voices")
    synthesize_corpus(root, voices=VOICES, n_sentences=6)
    return root


@pytest.fixture(scope="module")
def conversation(corpus, tmp_path_factory):
    """ursula, walter, ursula, walter...: 8 turns of one sentence with pauses; its turns."""
    from voxid.audio import load_audio

    rng = np.random.default_rng(0)
    parts, turns, t = [np.zeros(int(0.4 * SR), np.float32)], [], 0.4
    for i in range(8):
        who = VOICES[i % 2]
        wav = load_audio(sorted((corpus / who).glob("*.wav"))[i // 2], sr=SR)
        parts.append(wav)
        turns.append((t, t + wav.size / SR, who))
        pause = np.zeros(int(rng.uniform(0.3, 0.8) * SR), np.float32)
        parts.append(pause)
        t += (wav.size + pause.size) / SR
    audio = np.concatenate(parts)
    path = tmp_path_factory.mktemp("diar-conv") / "talk.wav"
    sf.write(path, audio, SR, subtype="PCM_16")
    return path, turns


@pytest.fixture(scope="module")
def base():
    return Recognizer.load(registry=None)


@pytest.fixture(scope="module")
def registry(corpus, tmp_path_factory) -> Path:
    """A registry with Ursula enrolled from sentences the conversation does not use."""
    db = tmp_path_factory.mktemp("diar-db") / "speakers.db"
    rec = Recognizer.load(registry=db)
    rec.enroll("Ursula", sorted((corpus / "ursula").glob("*.wav"))[4:])
    return db


def _overlap(segments, turns) -> float:
    """Seconds of reference speech covered by any output segment."""
    covered = 0.0
    for a, b, _ in turns:
        for s in segments:
            covered += max(0.0, min(b, s.end) - max(a, s.start))
    return covered


def test_two_voices_found_and_speech_covered(base, conversation):
    path, turns = conversation
    result = base.diarize(str(path))
    assert isinstance(result, Diarization)
    assert result.num_speakers == 2, result.to_dict()
    speech = sum(b - a for a, b, _ in turns)
    assert _overlap(result.segments, turns) >= 0.9 * speech
    # Turns follow the voices: each reference turn is mostly one output label, and the
    # labels alternate as the voices do.
    majority = []
    for a, b, _ in turns:
        share: dict[str, float] = {}
        for s in result.segments:
            share[s.speaker] = share.get(s.speaker, 0) + max(0.0, min(b, s.end) - max(a, s.start))
        best = max(share, key=share.get)
        assert share[best] >= 0.8 * (b - a), (a, b, share)
        majority.append(best)
    assert len(set(majority[0::2])) == len(set(majority[1::2])) == 1
    assert majority[0] != majority[1]
    assert all(s.end > s.start for s in result.segments)
    assert all(
        x.end <= y.start + 1e-9 for x, y in zip(result.segments, result.segments[1:], strict=False)
    )
    # A known count is obeyed, and max_speakers caps the estimate.
    assert base.diarize(str(path), num_speakers=1).num_speakers == 1
    assert base.diarize(str(path), max_speakers=1).num_speakers == 1


def test_each_enrolled_name_labels_at_most_one_cluster():
    from voxid.diarization import centroid_namer

    refs = np.eye(3, dtype=np.float32)
    namer = centroid_namer(["ann", "bob", "cy"], refs, lambda c, r: c @ r.T, 0.5)
    # Two clusters close to ann: the closer takes the name, the other stays anonymous and
    # reports its best score; a cluster outbid for ann takes bob, its next passing match.
    got = namer(np.array([[1.0, 0.0, 0.0], [0.95, 0.05, 0.0], [0.7, 0.6, 0.0]]))
    assert [n for n, _ in got] == ["ann", None, "bob"]
    assert got[1][1] == pytest.approx(0.95 / np.hypot(0.95, 0.05))
    # Nobody passes: no names, every score still reported.
    strict = centroid_namer(["ann", "bob", "cy"], refs, lambda c, r: c @ r.T, 0.6)
    none = strict(np.array([[0.1, 0.1, 0.1]]))
    assert none[0][0] is None and none[0][1] == pytest.approx(1 / np.sqrt(3))


def test_registry_names_the_enrolled_speaker(conversation, registry):
    path, turns = conversation
    rec = Recognizer.load(registry=registry)
    result = rec.diarize(str(path))
    labels = set(result.labels)
    assert labels == {"Ursula", "SPEAKER_00"}, result.to_dict()
    ursula_time = sum(s.duration for s in result.segments if s.speaker == "Ursula")
    ref_ursula = sum(b - a for a, b, who in turns if who == "ursula")
    assert ursula_time == pytest.approx(ref_ursula, rel=0.25)
    named = [s for s in result.speakers if s.enrolled]
    assert [s.label for s in named] == ["Ursula"] and named[0].score >= rec.threshold
    assert all(s.score is not None for s in result.segments if s.speaker == "Ursula")


def test_blocks_stream_like_one_piece_and_arrays_work(base, conversation):
    path, _ = conversation
    whole = base.diarize(str(path))
    small = base.diarize(str(path), config=DiarizationConfig(block_s=4.0))
    assert small.num_speakers == whole.num_speakers
    assert abs(small.duration - whole.duration) < 1e-6
    wav, sr = sf.read(path, dtype="float32")
    arr = base.diarize(wav, sr=sr)
    assert [s.speaker for s in arr.segments] == [s.speaker for s in whole.segments]


def test_silence_overlap_and_short_audio_do_not_crash(base, conversation):
    path, turns = conversation
    wav, _ = sf.read(path, dtype="float32")
    # Two voices at once: one label per moment (the dominant voice), no crash.
    a, b = int(turns[0][0] * SR), int(turns[0][1] * SR)
    c = int(turns[1][0] * SR)
    mixed = wav.copy()
    mixed[a : a + (b - a)] += 0.7 * wav[c : c + (b - a)]
    result = base.diarize(mixed, sr=SR)
    assert result.num_speakers >= 1
    assert all(
        x.end <= y.start + 1e-9 for x, y in zip(result.segments, result.segments[1:], strict=False)
    )
    quiet = 1e-4 * np.random.default_rng(1).standard_normal(SR * 3).astype(np.float32)
    assert base.diarize(quiet, sr=SR).segments == []
    one = base.diarize(wav[a : a + int(0.8 * SR)], sr=SR)
    assert one.num_speakers == 1


def test_rttm_fields_parse_back_and_dict():
    d = Diarization([Segment(0.25, 1.5, "Zoë Smith", 4.2), Segment(1.75, 3.0, "SPEAKER_00")], 3.2)
    text = d.to_rttm("my call")
    lines = text.splitlines()
    assert len(lines) == 2
    for line, seg in zip(lines, d.segments, strict=True):
        f = line.split()
        assert len(f) == 10 and f[0] == "SPEAKER" and f[1] == "my_call" and f[2] == "1"
        assert float(f[3]) == pytest.approx(seg.start) and float(f[4]) == pytest.approx(
            seg.duration
        )
        assert f[5] == f[6] == f[8] == f[9] == "<NA>"
    back = parse_rttm(text)["my_call"]
    assert [(s.start, s.end, s.speaker) for s in back] == [
        (0.25, 1.5, "Zoë_Smith"), (1.75, 3.0, "SPEAKER_00")
    ]  # fmt: skip
    data = d.to_dict()
    assert data["num_speakers"] == 2 and data["segments"][0]["score"] == 4.2
    json.dumps(data)
    with pytest.raises(ConfigError, match="line 1"):
        parse_rttm("SPEAKER f 1 abc 1.0 <NA> <NA> x <NA> <NA>\n")


def test_spectral_and_ahc_find_the_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32))
    x = np.concatenate([c + 0.15 * rng.normal(size=(30, 32)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for method in ("spectral", "ahc"):
        labels = cluster_embeddings(x, method=method)
        assert len(set(labels)) == 3, method
        assert all(len(set(labels[i * 30 : (i + 1) * 30])) == 1 for i in range(3))
    assert len(set(cluster_embeddings(x, num_speakers=2))) == 2
    assert len(set(cluster_embeddings(x, max_speakers=2))) <= 2


def test_cli_writes_rttm_json_png_and_skips_bad_files(conversation, registry, tmp_path):
    from voxid.cli import app

    path, _ = conversation
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF this is not audio at all")
    out = tmp_path / "out"
    args = ["diarize", str(path), str(bad), "-r", str(registry), "-o", str(out), "--json"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rttm = (out / "talk.rttm").read_text()
    assert parse_rttm(rttm)["talk"]
    data = json.loads((out / "talk.json").read_text())
    assert {s["speaker"] for s in data["segments"]} == {"Ursula", "SPEAKER_00"}
    png = (out / "talk.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not (out / "broken.rttm").exists() and not list(out.glob("*.tmp*"))
    assert "skipped" in result.output and "broken.wav" in result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(report["failed"]) == [str(bad)]
    # Nothing readable: exit status 1.
    again = CliRunner().invoke(app, ["diarize", str(bad), "-o", str(out)])
    assert again.exit_code == 1
    both = CliRunner().invoke(app, ["diarize", str(path), "--num-speakers", "2",
                                    "--max-speakers", "3", "-o", str(out)])  # fmt: skip
    assert both.exit_code != 0


@pytest.fixture(scope="module")
def server(registry):
    from voxid.server import create_app
    from voxid.server.background import BackgroundServer

    rec = Recognizer.load(registry=registry)
    with BackgroundServer(create_app(rec, api_key="k", max_upload_mb=2.0)) as srv:
        yield srv


def test_endpoint_answers_turns_and_keeps_the_limits(server, conversation):
    path, _ = conversation
    with httpx.Client(base_url=server.url, timeout=120) as http:
        r = http.post("/diarize", files={"file": ("talk.wav", path.read_bytes(), "audio/wav")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert {s["speaker"] for s in body["segments"]} == {"Ursula", "SPEAKER_00"}
        assert body["audio"]["filename"] == "talk.wav" and body["num_speakers"] == 2
        r = http.post("/diarize?num_speakers=1", files={"file": ("t.wav", path.read_bytes())})
        assert r.status_code == 200 and r.json()["num_speakers"] == 1
        r = http.post("/diarize?num_speakers=0", files={"file": ("t.wav", path.read_bytes())})
        assert r.status_code == 422
        r = http.post("/diarize", files={"file": ("x.wav", b"not audio at all, no")})
        assert r.status_code == 422 and "x.wav" in r.json()["detail"]
        big = np.zeros(3_000_000, np.uint8).tobytes()
        r = http.post("/diarize", files={"file": ("big.wav", big)})
        assert r.status_code == 413


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed")
def test_page_draws_the_timeline_with_names(server, conversation, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    path, _ = conversation
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url)
        page.wait_for_selector("#health:not(:has-text('connecting'))")
        page.click("#diarize")
        assert "Record something" in page.text_content("#message")
        page.set_input_files("#file", str(path))
        with page.expect_response(lambda r: r.url.split("?")[0].endswith("/diarize")) as info:
            page.click("#diarize")
        assert info.value.status == 200, info.value.text()
        sync_api.expect(page.locator("#timeline .lane")).to_have_count(2, timeout=30_000)
        names = page.locator("#timeline .lane-name").all_text_contents()
        assert sorted(names) == ["SPEAKER_00", "Ursula"]
        bars = page.locator("#timeline .lane[data-speaker='Ursula'] .turn")
        assert bars.count() >= 3
        colours = {
            page.locator(f"#timeline .lane[data-speaker='{n}'] .turn").first.evaluate(
                "e => getComputedStyle(e).backgroundColor"
            )
            for n in names
        }
        assert len(colours) == 2
        page.screenshot(path=str(tmp_path / "diarize.png"), full_page=True)
        assert not errors, errors
        browser.close()


def test_voxid_diarize_process_exits_one_when_all_fail(tmp_path):
    import sys

    bad = tmp_path / "nothing.wav"
    bad.write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "voxid", "diarize", str(bad), "-o", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "nothing.wav" in proc.stderr and "empty" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.shared_data
def test_diarize_eval_scores_real_speech_conversations(shared_data):
    from voxid.cli import app

    pytest.importorskip("pyannote.metrics")
    args = ["diarize-eval", "--data", str(shared_data), "--n", "2", "--seed", "3", "--json"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    summary = out["summary"]
    assert summary["conversations"] == 2 and 0 <= summary["der"] < 0.6
    for row in out["conversations"]:
        assert 2 <= row["ref_speakers"] <= 5 and row["total_s"] > 10
        parts = row["missed_s"] + row["false_alarm_s"] + row["confusion_s"]
        assert row["der"] == pytest.approx(parts / row["total_s"])


def test_chunk_grid_windows_equal_windows_embedded_one_by_one(base, conversation):
    """With the VAD off (every frame speech), a 2-s window composed from the grid's 1-s
    chunks holds exactly the chunks the recogniser would cut from that window: the same
    starts and, to float rounding, the same embeddings as embedding each window alone."""
    from voxid.diarization import embed_windows
    from voxid.vad import VadConfig

    path, _ = conversation
    wav, sr = sf.read(path, dtype="float32")
    off = VadConfig(enabled=False)
    cfg = DiarizationConfig(vad=off, count_window_s=3.0, count_hop_s=1.0)
    grid = embed_windows(base.backend, wav, sr=sr, config=cfg)
    alone = embed_windows(base.backend, wav, sr=sr, config=cfg.replace(grid_s=None))
    n = len(alone.starts) - 1  # the last window of the old path ends with the audio
    assert n > 10
    assert np.array_equal(grid.starts[:n], alone.starts[:n])
    cos = np.sum(grid.embeddings[:n] * alone.embeddings[:n], axis=1)
    assert cos.min() > 0.999
    assert grid.count_embeddings is not None and alone.count_embeddings is not None
    m = min(len(grid.count_embeddings), len(alone.count_embeddings)) - 1
    cos = np.sum(grid.count_embeddings[:m] * alone.count_embeddings[:m], axis=1)
    assert m > 5 and cos.min() > 0.999


def test_grid_settings_are_checked_and_fall_back_when_they_do_not_fit(base, conversation):
    path, _ = conversation
    with pytest.raises(ConfigError, match="grid_s"):
        DiarizationConfig(grid_s=0)
    with pytest.raises(ConfigError, match="count_trim"):
        DiarizationConfig(count_trim=0.5)
    with pytest.raises(ConfigError, match=r"speech_threshold: must be a probability in \(0, 1\)"):
        DiarizationConfig(speech_threshold=1.5)
    # A 1.5-s window is not a whole number of 1-s chunks: each window is embedded alone.
    odd = base.diarize(str(path), config=DiarizationConfig(window_s=1.5, hop_s=0.75))
    assert odd.num_speakers >= 1 and odd.segments


def test_the_speech_threshold_widens_the_speech_mask(base, conversation):
    """Diarization's own Silero threshold (0.3) keeps the quiet edges of turns that the
    recogniser's 0.5 drops: more speech frames, and every one the stricter one found."""
    from voxid.diarization import embed_windows

    path, _ = conversation
    wav, sr = sf.read(path, dtype="float32")
    # Speech that swells and fades, as a voice does turning away, over a faint noise bed.
    t = np.arange(wav.size) / sr
    wav = wav * (0.03 + 0.97 * np.abs(np.sin(np.pi * t / 2.5))).astype(np.float32)
    wav += 0.002 * np.random.default_rng(1).standard_normal(wav.size).astype(np.float32)
    loose = embed_windows(base.backend, wav, sr=sr, config=DiarizationConfig()).mask
    strict = embed_windows(
        base.backend, wav, sr=sr, config=DiarizationConfig(speech_threshold=None)
    ).mask
    assert loose.size == strict.size
    assert loose.sum() > strict.sum()
    assert np.mean(loose[strict]) > 0.99


def test_the_count_is_made_on_the_encoders_embeddings_before_the_lda(base, conversation):
    """The base model's windows carry the encoder's own embeddings too, recovered from the
    projected ones: the same as the torch model's without its projection, composed into
    windows the same way; the count follows them, the given count overrides them."""
    import torch

    from voxid.diarization import diarize_windows, embed_windows
    from voxid.inference.backends import TorchBackend
    from voxid.pretrained import resolve
    from voxid.vad import VadConfig

    path, _ = conversation
    wav, sr = sf.read(path, dtype="float32")
    cfg = DiarizationConfig(vad=VadConfig(enabled=False))
    windows = embed_windows(base.backend, wav, sr=sr, config=cfg)
    raw, more = windows.encoder_embeddings, windows.encoder_count_embeddings
    assert raw is not None and raw.shape == windows.embeddings.shape
    assert more is not None and windows.count_embeddings is not None
    assert more.shape == windows.count_embeddings.shape
    bare = TorchBackend(resolve("base", "pt"))
    with torch.no_grad():
        bare.model.set_projection(None)
    plain = embed_windows(bare, wav, sr=sr, config=cfg)
    assert plain.encoder_embeddings is None  # no projection: nothing to recover
    assert np.sum(raw * plain.embeddings, axis=1).min() > 0.999
    assert not np.allclose(raw, windows.embeddings, atol=0.05)
    off = embed_windows(base.backend, wav, sr=sr, config=cfg.replace(count_on="model"))
    assert off.encoder_embeddings is None and off.encoder_count_embeddings is None
    # Windows whose encoder view holds three clear groups are counted as three, whatever
    # the projected embeddings say; a given count wins.
    rng = np.random.default_rng(0)
    n = len(raw)
    groups = np.repeat(np.arange(3), -(-n // 3))[:n]
    centres = np.linalg.qr(rng.standard_normal((raw.shape[1], 3)))[0].T
    three = centres[groups] + 0.05 * rng.standard_normal(raw.shape)
    three /= np.linalg.norm(three, axis=1, keepdims=True)
    from dataclasses import replace

    forced = replace(windows, encoder_embeddings=three.astype(np.float32),
                     encoder_count_embeddings=None)  # fmt: skip
    assert diarize_windows(forced, cfg).num_speakers == 3
    assert diarize_windows(forced, cfg, num_speakers=2).num_speakers == 2
    with pytest.raises(ConfigError, match="count_on: must be one of"):
        DiarizationConfig(count_on="lda")


def test_a_projection_is_recovered_exactly_from_both_backends(base):
    """`Backend.unproject` of the ONNX and torch backends gives the encoder's embeddings."""
    import torch

    from voxid.inference.backends import TorchBackend
    from voxid.numeric import unproject
    from voxid.pretrained import resolve

    chunks = 0.1 * np.random.default_rng(1).standard_normal((4, SR)).astype(np.float32)
    torch_backend = TorchBackend(resolve("base", "pt"))
    for backend in (base.backend, torch_backend):
        assert np.abs(backend.unproject(backend.embed(chunks))).max() <= 1.0
    got = base.backend.unproject(base.backend.embed(chunks))
    with torch.no_grad():
        torch_backend.model.set_projection(None)
    assert np.abs(got - torch_backend.embed(chunks)).max() < 1e-4
    assert torch_backend.unproject(torch_backend.embed(chunks)) is None
    assert unproject(np.ones((2, 3)), np.zeros(4), np.ones((4, 3))) is None  # not square
