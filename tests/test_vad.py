"""voxid.vad: energy VAD on real and generated speech, silence removal, chunking."""

from __future__ import annotations

import itertools

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
