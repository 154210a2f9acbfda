"""voxid.vad: energy VAD on real and generated speech, silence removal, chunking."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from conftest import tone
from voxid.audio import load_audio
from voxid.errors import ConfigError
from voxid.vad import ChunkConfig, VadConfig, chunk, remove_silence, speech_segments

SR = 16000


def test_tone_between_silences():
    wav = np.concatenate([np.zeros(SR), tone(1.0, SR), np.zeros(SR)]).astype(np.float32)
    ((start, end),) = speech_segments(wav, SR, pad_s=0.0)
    # the tone is [16000, 32000); frames straddling its edges may be kept, nothing more
    assert SR - 400 <= start <= SR and 2 * SR <= end <= 2 * SR + 400
    padded = speech_segments(wav, SR, pad_s=0.05)
    assert padded == [(start - 800, end + 800)]


def test_short_gap_is_bridged_and_long_gap_splits():
    speech = tone(0.5, SR)
    short_gap = np.concatenate([speech, np.zeros(int(0.1 * SR)), speech]).astype(np.float32)
    assert len(speech_segments(short_gap, SR, min_silence_s=0.2)) == 1
    long_gap = np.concatenate([speech, np.zeros(int(0.5 * SR)), speech]).astype(np.float32)
    assert len(speech_segments(long_gap, SR, min_silence_s=0.2)) == 2


def test_short_burst_is_dropped():
    click = tone(0.04, SR)
    wav = np.concatenate([tone(0.5, SR), np.zeros(SR), click, np.zeros(SR)]).astype(np.float32)
    segments = speech_segments(wav, SR, min_speech_s=0.1, pad_s=0.0)
    assert len(segments) == 1 and segments[0][1] < 0.6 * SR


def test_threshold_is_relative_to_the_peak():
    loud, quiet = tone(0.5, SR, amp=0.5), tone(0.5, SR, amp=0.5 * 10 ** (-30 / 20))
    gap = np.zeros(SR, np.float32)
    wav = np.concatenate([loud, gap, quiet])
    assert len(speech_segments(wav, SR, threshold_db=-35)) == 2
    assert len(speech_segments(wav, SR, threshold_db=-25)) == 1
    # a global gain change does not move the decision
    assert speech_segments(wav * 0.01, SR) == speech_segments(wav, SR)


def test_silence_gives_nothing():
    assert speech_segments(np.zeros(SR, np.float32), SR) == []
    assert remove_silence(np.zeros(SR, np.float32), SR).size == 0
    assert speech_segments(np.zeros(0, np.float32), SR) == []


def test_real_speech_inserted_silence_is_removed(speech_wav):
    speech = load_audio(speech_wav, sr=SR)
    trimmed = remove_silence(speech, SR)
    gap = np.zeros(2 * SR, np.float32)
    noisy_gap = 1e-4 * np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32)
    wav = np.concatenate([gap, speech, noisy_gap, speech, gap])
    kept = remove_silence(wav, SR)
    # the 6 s of inserted silence go; the speech (already trimmed the same way) stays
    assert kept.size <= 2 * trimmed.size + 2 * int(0.1 * SR)
    assert kept.size >= 2 * trimmed.size - int(0.05 * SR)
    energy = np.sum(kept.astype(np.float64) ** 2) / np.sum(wav.astype(np.float64) ** 2)
    assert energy > 0.999


def test_real_speech_voxforge(shared_data):
    path = sorted((shared_data / "voxforge").glob("*/*.wav"))[0]
    wav = load_audio(path, sr=SR)
    segments = speech_segments(wav, SR)
    kept = sum(b - a for a, b in segments)
    assert segments and 0.2 * wav.size < kept <= wav.size
    assert all(a < b for a, b in segments)
    assert all(b1 < a2 for (_, b1), (a2, _) in itertools.pairwise(segments))


def test_chunk_no_overlap_and_tail_policies():
    wav = np.arange(int(2.7 * SR), dtype=np.float32)
    pad = chunk(wav, SR, seconds=1.0, tail="pad")
    assert [c.size for c in pad] == [SR, SR, SR]
    np.testing.assert_array_equal(pad[1], wav[SR : 2 * SR])
    np.testing.assert_array_equal(pad[2][: int(0.7 * SR)], wav[2 * SR :])
    assert not pad[2][int(0.7 * SR) :].any()
    assert [c.size for c in chunk(wav, SR, tail="keep")] == [SR, SR, int(0.7 * SR)]
    assert [c.size for c in chunk(wav, SR, tail="drop")] == [SR, SR]
    assert len(chunk(wav, SR, tail="pad", min_tail_seconds=0.8)) == 2


def test_chunk_overlap():
    wav = np.arange(3 * SR, dtype=np.float32)
    chunks = chunk(wav, SR, seconds=1.0, hop_seconds=0.5, tail="drop")
    assert len(chunks) == 5
    for i, c in enumerate(chunks):
        np.testing.assert_array_equal(c, wav[i * SR // 2 : i * SR // 2 + SR])


def test_chunk_short_signal():
    short = np.ones(int(0.6 * SR), np.float32)
    assert [c.size for c in chunk(short, SR, tail="pad")] == [SR]
    assert chunk(short, SR, tail="drop") == []
    assert chunk(np.ones(int(0.3 * SR), np.float32), SR, tail="pad") == []


def test_configs_round_trip_and_apply():
    vad = VadConfig(method="energy", threshold_db=-30.0, pad_s=0.0)
    assert VadConfig.from_dict(vad.to_dict()) == vad
    wav = np.concatenate([np.zeros(SR), tone(1.0, SR), np.zeros(SR)]).astype(np.float32)
    np.testing.assert_array_equal(vad.apply(wav, SR), remove_silence(wav, SR, threshold_db=-30.0,
                                                                      pad_s=0.0))  # fmt: skip
    np.testing.assert_array_equal(VadConfig(enabled=False).apply(wav, SR), wav)
    chunker = ChunkConfig(seconds=0.5, hop_seconds=0.25, tail="keep")
    assert ChunkConfig.from_dict(chunker.to_dict()) == chunker
    assert len(chunker.apply(wav, SR)) == len(chunk(wav, SR, seconds=0.5, hop_seconds=0.25,
                                                    tail="keep"))  # fmt: skip
    with pytest.raises(ConfigError, match="unknown keys"):
        VadConfig.from_dict({"treshold_db": -30})


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda w: speech_segments(w, SR, threshold_db=3), "threshold_db"),
        (lambda w: speech_segments(w, SR, frame_ms=0), "frame_ms"),
        (lambda w: speech_segments(w, SR, pad_s=-1), "pad_s"),
        (lambda w: chunk(w, SR, seconds=0), "seconds"),
        (lambda w: chunk(w, SR, tail="wrap"), "tail"),
        (lambda w: chunk(w[None, :], SR), "wav"),
    ],
)
def test_bad_parameters(call, match):
    with pytest.raises(ConfigError, match=match):
        call(tone(0.5, SR))


# ------------------------------------------------------ Silero, the level floor, one policy
# Issue #15: noise, hum and dither counted as speech; quiet speech counted as silence.


def _at_dbfs(wav: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
    return (wav * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def white(seconds: float, dbfs: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """White noise at an RMS level in dBFS."""
    return _at_dbfs(np.random.default_rng(seed).standard_normal(int(seconds * sr)), dbfs)


def hum(seconds: float, sr: int = SR, freq: float = 50.0, amp: float = 0.3) -> np.ndarray:
    """Mains hum: 50 Hz and its odd harmonics, loud."""
    t = np.arange(int(seconds * sr)) / sr
    return (amp * sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 3, 5))).astype(np.float32)


def dither(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """TPDF dither of 16-bit audio: what a "silent" recording holds (about -100 dBFS)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    return ((rng.random(n) - rng.random(n)) / 32768).astype(np.float32)


@pytest.fixture(scope="module")
def real_speech(shared_data) -> np.ndarray:
    """4 real LibriSpeech utterances (read English, 16 kHz), about 50 s."""
    paths = sorted((shared_data / "librispeech-100").glob("*/*.flac"))[:4]
    return np.concatenate([load_audio(p, sr=SR) for p in paths])


def test_silero_loads_from_the_installed_package_without_network_or_torch():
    """The ONNX file comes from the silero-vad package; nothing is downloaded, and neither
    the package's torch code nor torch itself is imported."""
    code = """
import socket, sys
def refuse(*a, **k):
    raise OSError("network used")
socket.socket.connect = socket.create_connection = refuse
import numpy as np
from voxid.silero import model_path, silero_probabilities
probs, hop = silero_probabilities(np.zeros(16000, np.float32), 16000)
print(model_path().parent.parent.name, len(probs), hop, "torch" in sys.modules,
      "silero_vad" in sys.modules)
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["silero_vad", "32", "512.0", "False", "False"]


def test_silero_matches_the_streaming_model(real_speech):
    """At 16 kHz the sequence export gives the streaming model's probabilities."""
    from voxid.silero import _probabilities_native, _session

    wav = real_speech[: 3 * SR]
    fast = _probabilities_native(wav, SR)
    session, state = _session("silero_vad.onnx"), np.zeros((2, 1, 128), np.float32)
    context, slow = np.zeros(64, np.float32), []
    for i in range(0, wav.size, 512):
        x = np.concatenate([context, np.pad(wav[i : i + 512], (0, max(0, i + 512 - wav.size)))])
        prob, state = session.run(None, {"input": x[None], "state": state,
                                         "sr": np.array(SR, np.int64)})  # fmt: skip
        slow.append(prob.item())
        context = x[-64:]
    np.testing.assert_allclose(fast, slow, atol=1e-5)


@pytest.mark.parametrize("method", ["silero", "energy"])
def test_faint_noise_and_dither_are_never_speech(method):
    """White noise at -120 dBFS and 10 minutes of dither: below the floor, for either VAD
    (the energy VAD alone, relative to the loudest frame, calls all of it speech)."""
    vad = VadConfig(method=method)
    assert vad.segments(white(20, -120), SR) == []
    assert vad.segments(dither(600, 8000), 8000) == []
    # without the floor the energy VAD takes all of it
    assert speech_segments(white(20, -120), SR) == [(0, 20 * SR)]


def test_silero_tells_noise_and_hum_from_speech(shared_data):
    """Loud steady sounds pass any level floor; only Silero refuses them."""
    for name in ("boiler", "washing_machine"):
        noise = load_audio(shared_data / "noise" / f"{name}.wav", sr=SR)[: 20 * SR]
        assert VadConfig().speech_ratio(noise, SR) < 0.02, name
    assert VadConfig().segments(hum(20), SR) == []
    assert VadConfig().segments(white(20, -20), SR) == []
    assert VadConfig(method="energy").speech_ratio(hum(20), SR) == 1.0


@pytest.mark.parametrize("method", ["silero", "energy"])
def test_quiet_real_speech_still_counts(real_speech, method):
    """Real speech at -56 dBFS RMS keeps most of the speech it has at normal level."""
    vad = VadConfig(method=method)
    loud = vad.speech_ratio(real_speech, SR)
    quiet = vad.speech_ratio(_at_dbfs(real_speech, -56), SR)
    assert loud > 0.6 and quiet > 0.8 * loud, (loud, quiet)


def test_espeak_speech_is_speech(speech_wav):
    """The demo corpus (espeak-ng voices) is speech to Silero: the tour still trains."""
    wav = load_audio(speech_wav, sr=SR)
    assert VadConfig().speech_ratio(wav, SR) > 0.8


def test_short_clips_keep_their_word(shared_data):
    """A tight 0.25-s digit (fsdd, 8 kHz): Silero answers late, so it is run with silence
    around the clip; the word is found at the file's rate and at 16 kHz."""
    path = shared_data / "fsdd" / "theo" / "1_3.wav"
    for sr in (8000, 16000):
        assert VadConfig().speech_ratio(load_audio(path, sr=sr), sr) > 0.5


def test_silero_beats_energy_on_speech_in_noise(real_speech, shared_data):
    """Speech with a 2-s gap of boiler noise at 5 dB SNR: Silero keeps the speech and most
    of the gap goes (it answers late, so the gap's first half second stays); the energy VAD
    keeps all of it. (`truth` counts the pauses inside the utterances as speech.)"""
    noise = load_audio(shared_data / "noise" / "boiler.wav", sr=SR)
    speech = real_speech[: 20 * SR]
    gap = 2 * SR
    signal = np.concatenate([speech[: 10 * SR], np.zeros(gap), speech[10 * SR :]])
    truth = np.zeros(signal.size, bool)
    truth[: 10 * SR] = truth[10 * SR + gap :] = True
    rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2)))
    bed = noise[: signal.size] * (rms * 10 ** (-5 / 20) / float(np.sqrt(np.mean(noise**2))))
    mixed = (signal + bed).astype(np.float32)
    for method, max_gap_kept in (("silero", 0.45), ("energy", None)):
        mask = np.zeros(signal.size, bool)
        for a, b in VadConfig(method=method).segments(mixed, SR):
            mask[a:b] = True
        gap_kept = mask[~truth].mean()
        if max_gap_kept is None:
            assert gap_kept > 0.8, (method, gap_kept)
        else:
            assert gap_kept < max_gap_kept and mask[truth].mean() > 0.6, method


def test_vad_policy_validates_and_loads_old_configs():
    """A stored config from before `method` and `floor_dbfs` gets Silero and the floor."""
    old = {"enabled": True, "threshold_db": -35.0, "frame_ms": 25, "hop_ms": 10,
           "min_speech_s": 0.1, "min_silence_s": 0.2, "pad_s": 0.05}  # fmt: skip
    cfg = VadConfig.from_dict(old)
    assert cfg.method == "silero" and cfg.floor_dbfs == -70.0
    for bad, match in (({"method": "webrtc"}, "method"), ({"threshold": 1.5}, "threshold"),
                       ({"floor_dbfs": 10.0}, "floor_dbfs")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            VadConfig(**bad)


def test_old_model_metadata_gets_the_default_policy(random_model_file):
    from voxid.card import ModelCard
    from voxid.errors import ModelError
    from voxid.inference.recognizer import Recognizer

    assert Recognizer.load(random_model_file).backend.vad == VadConfig()
    meta = {"audio_config": {"vad": {"method": 3}}}
    with pytest.raises(ModelError, match=r"audio_config\.vad\.method"):
        ModelCard.from_dict(meta, "m.onnx")


def test_prepare_skips_noise_hum_and_dither(speech_corpus, tmp_path):
    """Files with no speech give 0 chunks: skipped and reported with the cause."""
    import shutil

    import soundfile as sf

    from voxid.data import assign_splits, load_corpus
    from voxid.data.prepare import PrepareConfig, prepare
    from voxid.data.store import StoreInfo

    shutil.copytree(speech_corpus / "alice", tmp_path / "alice")
    (tmp_path / "noisy").mkdir()
    sf.write(tmp_path / "noisy" / "white.wav", white(20, -120), SR, subtype="FLOAT")
    sf.write(tmp_path / "noisy" / "hum.wav", hum(20), SR)
    sf.write(tmp_path / "noisy" / "dither.wav", dither(600, 8000), 8000)  # 10 min, 16-bit
    sf.write(tmp_path / "noisy" / "speech.wav", load_audio(speech_corpus / "bruno" /
             "bruno_000.wav", sr=SR), SR)  # fmt: skip
    corpus = assign_splits(load_corpus(tmp_path), ratios=(1.0,))
    report = prepare(corpus, tmp_path / "s.h5", PrepareConfig(), workers=1)
    reasons = {Path(p).name: r for p, r in report.skipped}
    assert set(reasons) == {"white.wav", "hum.wav", "dither.wav"}, reasons
    assert all("no speech found by the silero VAD" in r for r in reasons.values()), reasons
    info = StoreInfo.open(report.out_path)
    assert info.audio_config["vad"]["method"] == "silero"
    # the energy VAD's floor still refuses the faint files; the hum it cannot tell
    energy = PrepareConfig(vad=VadConfig(method="energy"))
    report = prepare(corpus, tmp_path / "e.h5", energy, workers=1)
    assert {Path(p).name for p, _ in report.skipped} == {"white.wav", "dither.wav"}


def test_recogniser_refuses_noise_and_takes_quiet_speech(random_model_file, real_speech,
                                                         tmp_path):  # fmt: skip
    from voxid.inference.backends import NotEnoughSpeech
    from voxid.inference.recognizer import Recognizer

    rec = Recognizer.load(random_model_file, registry=tmp_path / "r.db")
    rec.enroll("ann", [_at_dbfs(real_speech[: 8 * SR], -56)], sr=SR)
    for noise in (white(20, -120), hum(20)):
        with pytest.raises(NotEnoughSpeech, match="of speech after silence removal"):
            rec.identify(noise, sr=SR)
        with pytest.raises(NotEnoughSpeech):
            rec.verify("ann", noise, sr=SR)
    assert rec.verify("ann", _at_dbfs(real_speech[8 * SR : 16 * SR], -56), sr=SR).score > 0


def test_silero_speed(real_speech):
    """Far faster than real time on one thread (the benchmark measures it properly)."""
    import time

    from voxid import silero

    VadConfig().segments(real_speech[:SR], SR)  # the session loads once per process
    silero._RECENT.clear()  # time the network, not the cache of recent signals
    start = time.perf_counter()
    VadConfig().segments(real_speech, SR)
    assert real_speech.size / SR / (time.perf_counter() - start) > 50


def test_recent_signals_are_answered_from_the_cache(real_speech):
    """The service asks twice for one upload; the answer depends on content and settings."""
    wav = real_speech[: 5 * SR]
    first = VadConfig().segments(wav, SR)
    assert VadConfig().segments(wav.copy(), SR) == first
    assert VadConfig(pad_s=0.0).segments(wav, SR) != first
    from voxid import silero

    for k in range(40):  # it stays small
        VadConfig().segments(wav[: SR + 100 * k], SR)
    assert len(silero._RECENT) <= silero._RECENT_SIZE
