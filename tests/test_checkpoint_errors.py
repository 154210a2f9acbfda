"""Unreadable checkpoints: each kind of bad file gets its own whole one-line message."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from voxid.checkpoint import read_checkpoint
from voxid.errors import ModelError


class _RunsShell:
    """Pickles as a call of os.system: what a hostile checkpoint carries."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _message(path) -> str:
    with pytest.raises(ModelError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.ckpt"
    torch.save({"voxid": {}, "state_dict": {"model.w": torch.ones(20_000)}}, path)
    return path


def test_random_bytes_are_not_a_torch_file(tmp_path):
    data = np.random.default_rng(0).bytes(4096)
    assert data[:1] not in (b"\x80", b"P")  # neither a pickle nor a zip by chance
    junk = tmp_path / "junk.pt"
    junk.write_bytes(data)
    message = _message(junk)
    assert "not a torch checkpoint" in message and "unknown format" in message
    assert "weights_only" not in message  # random bytes are no security refusal


def test_text_file_is_not_a_torch_file(tmp_path):
    text = tmp_path / "config.pt"
    text.write_text("epochs: 12\nmodel: crnn\n")
    message = _message(text)
    assert "not a torch checkpoint" in message and "a text file" in message


def test_empty_and_truncated_files_are_torn(tmp_path, good_file):
    empty = tmp_path / "last.ckpt"
    empty.write_bytes(b"")
    assert "empty file" in _message(empty)
    data = good_file.read_bytes()
    for cut in (len(data) // 2, 100):
        torn = tmp_path / f"torn{cut}.ckpt"
        torn.write_bytes(data[:cut])
        message = _message(torn)
        assert "truncated or torn" in message, message
        assert "central directory" in message  # what is missing


def test_weights_only_refusal_keeps_its_cause(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"voxid": {}, "state_dict": {}, "x": _RunsShell()}, evil)
    message = _message(evil)
    assert "refused by weights_only" in message
    assert "arbitrary code execution" in message
    assert f"unsupported GLOBAL {os.system.__module__}.system" in message


def test_plain_pickle_with_code_is_refused(tmp_path):
    import pickle

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"voxid": {}, "x": _RunsShell()}, protocol=2))
    message = _message(evil)
    assert "arbitrary code execution" in message and "GLOBAL" in message


def test_good_file_still_reads(good_file):
    with pytest.raises(ModelError, match="checkpoint description lacks"):
        read_checkpoint(good_file)  # readable: refused for its content, not its format


def test_cli_prints_one_line(tmp_path):
    torn = tmp_path / "run"
    torn.mkdir()
    (torn / "model.pt").write_bytes(b"")
    out = subprocess.run(
        [sys.executable, "-m", "voxid", "export", str(torn), "--onnx", str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines == [f"error: {torn / 'model.pt'}: empty file (torn: a save or copy was cut off)"]


def test_cut_legacy_pickle_is_corrupt(tmp_path):
    import pickle

    cut = tmp_path / "old.pt"
    cut.write_bytes(pickle.dumps({"voxid": {}, "w": list(range(1000))}, protocol=2)[:300])
    assert "truncated or corrupt" in _message(cut)
