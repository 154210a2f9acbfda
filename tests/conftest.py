"""Shared fixtures: real speech from ../shared/data (skipped where absent), a small
espeak-ng corpus, and generated signals."""

from __future__ import annotations

import os
from pathlib import Path

# As the CLI does: idle OpenMP threads sleep rather than spin (see voxid/cli/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import soundfile as sf

from pg_fixture import pg_server, pg_url  # noqa: F401  (a real PostgreSQL, once a session)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VOXID_SHARED_DATA", REPO.parent / "shared" / "data"))


#: Source of a function giving this process's peak RSS in MB (for code run in a subprocess).
PEAK_RSS_MB = (
    "def peak_rss_mb():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            return int(line.split()[1]) // 1024\n"
)


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


def tone(
    seconds: float = 1.0, sr: int = 16000, freq: float = 220.0, amp: float = 0.5, seed: int = 0
) -> np.ndarray:
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


@pytest.fixture(scope="session")
def wide_flac(tmp_path_factory) -> Path:
    """60 s of 8-channel 384 kHz FLAC, a quiet tone in channel 0's first second and zeros
    after: about 200 KB on disk, 737 MB once decoded as float32 (issue #15's upload)."""
    sr, channels = 384_000, 8
    path = tmp_path_factory.mktemp("wide") / "wide.flac"
    block = np.zeros((sr, channels), np.float32)
    with sf.SoundFile(path, "w", sr, channels, format="FLAC", subtype="PCM_16") as f:
        block[:, 0] = tone(1.0, sr, amp=0.2)
        f.write(block)
        block[:, 0] = 0.0
        for _ in range(59):
            f.write(block)
    return path


@pytest.fixture(autouse=True)
def seeded():
    """Seed Python's, NumPy's and torch's global generators before every test.

    A test that draws unseeded data then passes or fails the same way on every run: one
    such draw (a cell equal to its item's mean, ~4 % of runs) once failed CI.
    """
    import random

    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module, as `voxid serve`/`listen` run.

    Tests use tiny models: a second OpenMP thread gains nothing there, and on a busy 2-core
    machine two spinning threads make each step many times slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def random_model_file(tmp_path_factory) -> Path:
    """A full-size crnn with random weights in a model.pt: deterministic embeddings, enough
    for protocol, gating and timing tests (identical audio still scores ~1 against itself)."""
    from voxid.checkpoint import make_meta, save_inference_file
    from voxid.models import build_model

    model = build_model("crnn", n_classes=2).eval()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_inference_file(path, model, make_meta(model, ["train_a", "train_b"]))
    return path


@pytest.fixture(scope="session")
def trained_run(speech_corpus, tmp_path_factory) -> Path:
    """A run folder with a small crnn trained on `speech_corpus` (alice, bruno, chloe, david).

    Log-mel store with 1-s chunks, 80/10/10 split; about half a minute on 2 cores. The run
    holds best.ckpt, last.ckpt and model.pt like any `voxid train` run.
    """
    from voxid.config import load_config
    from voxid.data import assign_splits, load_corpus
    from voxid.data.prepare import PrepareConfig, prepare
    from voxid.training.run import train

    work = tmp_path_factory.mktemp("trained")
    corpus = assign_splits(load_corpus(speech_corpus), ratios=(0.7, 0.15, 0.15), seed=0)
    prepare(corpus, work / "store.h5", PrepareConfig(), workers=1)
    cfg = load_config(
        "crnn",
        [
            "model.conv_channels=[16,32,64]",
            "model.gru_hidden=64",
            "model.embedding_dim=64",
            "batch_size=16",
            "epochs=12",
            "patience=12",
            "augment.spec_augment=false",
            "num_workers=0",
        ],
    )
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast and immune to contention
    try:
        train(cfg, work / "store.h5", work / "run", progress=False)
    finally:
        torch.set_num_threads(before)
    return work / "run"


@pytest.fixture(scope="session")
def trained_model(trained_run) -> Path:
    """The inference file (model.pt) of `trained_run`."""
    return trained_run / "model.pt"


@pytest.fixture(scope="session")
def unseen_voice_wav(tmp_path_factory) -> Path:
    """An utterance by a voice that no model was trained on and nobody enrolled (elena)."""
    from voxid.demo import synthesize_corpus

    root = tmp_path_factory.mktemp("unseen")
    synthesize_corpus(root, n_speakers=5, n_sentences=2, offset=20)
    return sorted((root / "elena").glob("*.wav"))[0]
