"""Shared fixtures: real speech from ../shared/data (skipped where absent), a small
espeak-ng corpus, and generated signals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VOXID_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-speech corpora; the test is skipped where they are absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory) -> Path:
    """4 espeak-ng voices x 8 sentences (22.05 kHz WAV) in speaker folders."""
    from voxid.demo import synthesize_corpus

    root = tmp_path_factory.mktemp("speech")
    synthesize_corpus(root, n_speakers=4, n_sentences=8)
    return root


@pytest.fixture(scope="session")
def speech_wav(speech_corpus) -> Path:
    """One real (synthetic-voice) speech file of about 3 s."""
    return sorted((speech_corpus / "alice").glob("*.wav"))[0]


def tone(seconds: float = 1.0, sr: int = 16000, freq: float = 220.0, amp: float = 0.5,
         seed: int = 0) -> np.ndarray:
    """A harmonic tone with a little noise: speech-like enough for VAD and features."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wav = sum(amp / k * np.sin(2 * np.pi * freq * k * t) for k in range(1, 6))
    return (wav + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def write_wav(tmp_path):
    """Write an array to a WAV in tmp_path and return the path."""

    def _write(name: str, data: np.ndarray, sr: int = 16000, subtype: str | None = None) -> Path:
        path = tmp_path / name
        sf.write(path, data, sr, subtype=subtype)
        return path

    return _write
