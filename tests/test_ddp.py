"""Several processes, one command: a 2-process DDP run (gloo, CPU) through `voxid train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from voxid.checkpoint import load_checkpoint

TINY = ["model.conv_channels=[4,8,8]", "model.gru_hidden=16", "model.gru_layers=1",
        "model.mlp_hidden=16", "model.attention_channels=8", "model.embedding_dim=16",
        "augment.spec_augment=false", "batch_size=8"]  # fmt: skip


@pytest.mark.slow
def test_two_process_ddp_run_on_cpu(speech_corpus, tmp_path):
    from voxid.data import assign_splits, load_corpus
    from voxid.data.prepare import PrepareConfig, prepare
    from voxid.features import FeatureConfig

    corpus = assign_splits(load_corpus(speech_corpus), ratios=(0.5, 0.25, 0.25), seed=0)
    store = tmp_path / "logmel.h5"
    prepare(corpus, store, PrepareConfig(feature=FeatureConfig.logmel()), workers=1)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "voxid", "train", "crnn", *TINY, "accelerator=cpu",
           "devices=2", "strategy=ddp", "epochs=1", "limit_train_batches=2",
           "--data", str(store), "-o", str(out), "-q"]  # fmt: skip
    # One thread per process: two processes share the two cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stderr + done.stdout
    card, model = load_checkpoint(out)  # best.ckpt, written by rank 0
    assert card.labels == ("alice", "bruno", "chloe", "david")
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and metrics["val"]["n"] > 0
    assert model(torch.randn(2, 20, 64)).shape == (2, 4)
