"""Checkpoints that survive a kill mid-save, and resumes that refuse other data or another
network before anything is written (issue #15, items 3 and 4)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from voxid.config import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["model.conv_channels=[4,8,8]", "model.gru_hidden=16", "model.gru_layers=1",
        "model.mlp_hidden=16", "model.attention_channels=8", "model.embedding_dim=16",
        "batch_size=8", "augment.spec_augment=false", "num_workers=0"]  # fmt: skip


def _train(store, out, *overrides, resume=False):
    from voxid.train import train

    cfg = load_config("crnn", [*TINY, *overrides])
    return train(cfg, store, out, resume=resume, progress=False)


@pytest.fixture(scope="module")
def store(speech_corpus, tmp_path_factory) -> Path:
    """A log-mel store of the 4 espeak voices."""
    from voxid.data import assign_splits, load_corpus
    from voxid.data.store import PrepareConfig, prepare

    corpus = assign_splits(load_corpus(speech_corpus), ratios=(0.5, 0.25, 0.25), seed=0)
    path = tmp_path_factory.mktemp("store") / "four.h5"
    prepare(corpus, path, PrepareConfig(), workers=1)
    return path


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


# -- item 3: a checkpoint save is atomic -------------------------------------------------


class _FailsMidway:
    """Pickling it notes the run folder's files (the save is under way), then fails."""

    seen: ClassVar[list[str]] = []

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        type(self).seen = sorted(os.listdir(self.folder))
        raise OSError("No space left on device")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    from voxid.train import atomic_checkpoint_io

    io = atomic_checkpoint_io()
    last = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.arange(1000)}, last)
    assert torch.load(last, weights_only=True)["epoch"] == 1 and not _temps(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2, "w": torch.arange(1000), "x": _FailsMidway(tmp_path)}, last)
    # The bytes went to a temporary file beside last.ckpt, never over it.
    assert _FailsMidway.seen == [f".last.ckpt.{os.getpid()}.tmp", "last.ckpt"]
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert not _temps(tmp_path)


_SAVER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from voxid.train import atomic_checkpoint_io

    io, last = atomic_checkpoint_io(), Path(sys.argv[1]) / "last.ckpt"
    weights = torch.randn(6_000_000)  # a 24 MB checkpoint: each save takes a while
    for step in range(1000):
        io.save_checkpoint({"step": step, "w": weights}, last)
        print(step, flush=True)
    """
)


@pytest.fixture
def other_tmpdir(tmp_path):
    """A TMPDIR on another filesystem than the run folder where there is one (/dev/shm)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        folder = Path(tempfile.mkdtemp(dir=shm, prefix="voxid-test-"))
    else:
        folder = tmp_path / "tmpdir"
        folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_kill_during_a_save_leaves_a_whole_checkpoint(tmp_path, other_tmpdir):
    run = tmp_path / "run"
    run.mkdir()
    env = {**os.environ, "TMPDIR": str(other_tmpdir), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(run)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "0", "the first save did not finish"
        temp = run / f".last.ckpt.{child.pid}.tmp"
        deadline = time.monotonic() + 120
        while not temp.exists() and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert temp.exists(), "no save went through a temporary file in the run folder"
        os.kill(child.pid, signal.SIGKILL)  # in the middle of writing the next checkpoint
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    saved = torch.load(run / "last.ckpt", weights_only=True)  # whole, not torn
    assert saved["step"] >= 0 and saved["w"].numel() == 6_000_000
    big = [p for p in other_tmpdir.rglob("*") if p.is_file() and p.stat().st_size > 2**20]
    assert not big, f"checkpoint bytes went through TMPDIR: {big}"
    # At most the killed writer's half-written temporary file is left, beside last.ckpt.
    assert _temps(run) in ([], [temp.name])


def test_orphans_of_dead_writers_are_removed(tmp_path):
    from voxid.train import atomic_checkpoint_io

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = tmp_path / f".last.ckpt.{gone.pid}.tmp"  # as a kill -9 mid-save leaves it
    orphan.write_bytes(b"\0" * 4096)
    alive = tmp_path / f".last.ckpt.{os.getppid()}.tmp"  # another live writer's: kept
    alive.write_bytes(b"x")
    other = tmp_path / f".best.ckpt.{gone.pid}.tmp"  # another file's: left to its saves
    other.write_bytes(b"x")
    atomic_checkpoint_io().save_checkpoint({"step": 3}, tmp_path / "last.ckpt")
    assert _temps(tmp_path) == sorted([alive.name, other.name])
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": 3}


def test_training_never_writes_checkpoints_through_tmpdir(store, tmp_path, monkeypatch):
    # Lightning's stock writer stages each checkpoint in the temp folder and moves it over
    # the target; with a temp "folder" that is a plain file, a run that needs it cannot save.
    import lightning.pytorch  # noqa: F401  (its import sets up torch's caches in the temp folder)

    not_a_folder = tmp_path / "tmpdir"
    not_a_folder.write_text("a file, not a folder")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_folder))
    result = _train(store, tmp_path / "run", "epochs=1", "limit_train_batches=2")
    for name in ("best.ckpt", "last.ckpt", "model.pt"):
        assert (result.out_dir / name).is_file(), name
    assert not _temps(result.out_dir)
