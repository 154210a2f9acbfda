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
from voxid.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["model.conv_channels=[4,8,8]", "model.gru_hidden=16", "model.gru_layers=1",
        "model.mlp_hidden=16", "model.attention_channels=8", "model.embedding_dim=16",
        "batch_size=8", "augment.spec_augment=false", "num_workers=0"]  # fmt: skip


def _train(store, out, *overrides, resume=False):
    from voxid.training.run import train

    cfg = load_config("crnn", [*TINY, *overrides])
    return train(cfg, store, out, resume=resume, progress=False)


@pytest.fixture(scope="module")
def store(speech_corpus, tmp_path_factory) -> Path:
    """A log-mel store of the 4 espeak voices."""
    from voxid.data import assign_splits, load_corpus
    from voxid.data.prepare import PrepareConfig, prepare

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
    from voxid.training.run import atomic_checkpoint_io

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
    from voxid.training.run import atomic_checkpoint_io

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
    from voxid.training.run import atomic_checkpoint_io

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


# -- item 4: a resume checks the data and the network before writing anything ------------


@pytest.fixture(scope="module")
def renamed_store(speech_corpus, tmp_path_factory) -> Path:
    """Another store with as many voices: the same count of classes, other speakers."""
    from voxid.data import assign_splits, load_corpus
    from voxid.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("renamed")
    for i, folder in enumerate(sorted(p for p in speech_corpus.iterdir() if p.is_dir())):
        shutil.copytree(folder, root / "corpus" / f"voice{i}")
    corpus = assign_splits(load_corpus(root / "corpus"), ratios=(0.5, 0.25, 0.25), seed=0)
    prepare(corpus, root / "renamed.h5", PrepareConfig(), workers=1)
    return root / "renamed.h5"


@pytest.fixture(scope="module")
def run(store, tmp_path_factory) -> Path:
    """One epoch of a tiny crnn: a run folder to resume (never changed by these tests)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    _train(store, out, "epochs=1", "limit_train_batches=2")
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _refused(error, store, run, *overrides) -> str:
    before = _snapshot(run)
    with pytest.raises(error) as info:
        _train(store, run, "epochs=2", "limit_train_batches=2", *overrides, resume=True)
    assert _snapshot(run) == before  # config.yaml, checkpoints, logs: nothing written
    message = str(info.value)
    assert "\n" not in message and str(run) in message
    return message


def test_resume_on_another_store_is_refused(run, renamed_store):
    message = _refused(DataError, renamed_store, run)
    assert str(renamed_store) in message and "data fingerprint" in message


def test_resume_on_the_same_voices_otherwise_split_is_refused(run, speech_corpus, tmp_path):
    from voxid.data import assign_splits, load_corpus
    from voxid.data.prepare import PrepareConfig, prepare

    corpus = assign_splits(load_corpus(speech_corpus), ratios=(0.5, 0.25, 0.25), seed=1)
    resplit = prepare(corpus, tmp_path / "resplit.h5", PrepareConfig(), workers=1).out_path
    assert "data fingerprint" in _refused(DataError, resplit, run)


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("model.gru_hidden=8", "model.gru_hidden"),  # weights of other shapes
        ("model.dropout=0.5", "model.dropout"),  # same shapes, another recipe
        ("speakers=[alice,bruno,chloe]", "classes"),
        ("mode=authenticate", "classes"),
    ],
)
def test_resume_with_another_network_is_refused(run, store, override, names):
    extra = ["members=[alice]"] if override.startswith("mode=") else []
    message = _refused(ConfigError, store, run, override, *extra)
    assert names in message


def test_resume_of_authentication_for_other_members_is_refused(store, tmp_path):
    auth = tmp_path / "auth"
    _train(store, auth, "epochs=1", "limit_train_batches=2", "mode=authenticate",
           "members=[alice]")  # fmt: skip
    # The same two classes (outsider, member), but bruno would now be the member.
    message = _refused(ConfigError, store, auth, "mode=authenticate", "members=[bruno]")
    assert message.startswith("members: ") and "['alice']" in message


def test_resume_as_another_model_is_refused(run, store):
    from voxid.training.run import train

    before = _snapshot(run)
    with pytest.raises(ConfigError, match=r"model: .* was trained as 'crnn', not 'seed_cnn'"):
        train(load_config("seed_cnn"), store, run, resume=True, progress=False)
    assert _snapshot(run) == before


def test_resume_refusal_through_the_cli_is_one_line(run, renamed_store):
    before = _snapshot(run)
    args = [sys.executable, "-m", "voxid", "train", "crnn", *TINY, "epochs=2",
            "--data", str(renamed_store), "-o", str(run), "--resume", "-q"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 1, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {renamed_store}: "), out.stderr
    assert _snapshot(run) == before


def test_resume_with_the_same_store_and_recipe_continues(store, tmp_path):
    # As scripts/base_model.sh does after an interruption: the same store and recipe.
    again = tmp_path / "again"
    _train(store, again, "epochs=1", "limit_train_batches=2")
    result = _train(store, again, "epochs=2", "limit_train_batches=2", resume=True)
    assert result.metrics["epochs_run"] == 2 and result.metrics["epochs_this_run"] == 1
    assert torch.load(again / "last.ckpt", weights_only=True)["epoch"] == 1


def test_resume_of_a_distilled_run_needs_its_teacher(store, tmp_path):
    import numpy as np

    from voxid.data.store import StoreInfo

    info = StoreInfo.open(store)
    targets = tmp_path / "teacher.npz"
    emb = np.random.default_rng(0).standard_normal((len(info), 8)).astype(np.float16)
    np.savez(targets, embeddings=emb, mask=np.asarray(info.items["split"]).astype(str) == "train",
             fingerprint=np.array(info.fingerprint), teacher=np.array("test"))  # fmt: skip
    out = tmp_path / "distilled"
    _train(store, out, "epochs=1", "limit_train_batches=2", f"distill_targets={targets}")
    # Without the teacher the training module has no map to its space (distill.weight).
    message = _refused(ConfigError, store, out)
    assert "distill.weight" in message and "distill_targets" in message
    result = _train(store, out, "epochs=2", "limit_train_batches=2",
                    f"distill_targets={targets}", resume=True)  # fmt: skip
    assert result.metrics["epochs_run"] == 2
