"""The shipped base model: found by name, no network, same function in ONNX and torch, used
by every command by default, read-only, a starting point for fine-tuning, inside the wheel."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from voxid.cli import app
from voxid.errors import ConfigError, ModelError
from voxid.pretrained import HERE, available, is_shipped, resolve

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict | None = None, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the shipped model tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def waveform_store(speech_corpus, tmp_path_factory) -> Path:
    """The four espeak-ng voices as a 16 kHz waveform store, 50/25/25 per speaker."""
    from voxid.data import assign_splits, load_corpus
    from voxid.data.prepare import PrepareConfig, prepare
    from voxid.features import FeatureConfig

    out = tmp_path_factory.mktemp("wave") / "store.h5"
    corpus = assign_splits(load_corpus(speech_corpus), ratios=(0.5, 0.25, 0.25), seed=0)
    prepare(corpus, out, PrepareConfig(feature=FeatureConfig.waveform()), workers=1)
    return out


def test_base_is_shipped_small_and_documented():
    (base,) = [m for m in available() if m.name == "base"]
    assert base.onnx.parent == HERE and base.size_mb < 15
    assert base.card is not None and "Attribution" in base.card.read_text()
    assert resolve(None, "pt") == base.torch and resolve("base") == base.onnx
    assert resolve("runs/elsewhere.onnx") == Path("runs/elsewhere.onnx")  # paths are paths


def test_load_with_no_path_and_no_network(no_network, speech_wav, one_torch_thread):
    from voxid import Recognizer

    rec = Recognizer.load(registry=None)
    assert rec.backend.kind == "onnx" and is_shipped(rec.backend.source)
    emb = rec.embed(str(speech_wav))
    assert emb.shape == (192,) and abs(float(np.linalg.norm(emb)) - 1) < 1e-4
    # A threshold calibrated at FAR 1 % on speakers the model never trained on, for scores
    # AS-normed against the training speakers' cohort; and no training speakers to offer:
    # the base model knows nobody until they are enrolled.
    assert rec.card.scoring.threshold_kind == "asnorm:far=0.01"
    assert rec.threshold == rec.card.scoring.threshold and rec.backend.cohort.shape[0] >= 100
    assert rec.speakers() == []


def test_onnx_and_torch_files_are_one_model(speech_wav, one_torch_thread):
    from voxid import Recognizer

    onnx = Recognizer.load("base", registry=None)
    torch_ = Recognizer.load(resolve("base", "pt"), registry=None)
    assert onnx.model_fingerprint == torch_.model_fingerprint
    a, b = onnx.embed(str(speech_wav)), torch_.embed(str(speech_wav))
    assert float(a @ b) > 0.9999


def test_cli_enrol_verify_identify_default_model(speech_corpus, tmp_path, one_torch_thread):
    files = {s: sorted((speech_corpus / s).glob("*.wav")) for s in ("alice", "bruno", "chloe")}
    env = {"VOXID_REGISTRY": str(tmp_path / "speakers.db")}
    for name, paths in files.items():
        out = json.loads(run("enroll", name, *map(str, paths[:3]), "--json", env=env))
        assert out["n_utterances"] == 3
    base_threshold = json.loads(run("models", "--json"))[0]
    assert base_threshold["name"] == "base" and base_threshold["default"]

    same = json.loads(run("verify", "alice", str(files["alice"][5]), "--json", env=env))
    other = json.loads(run("verify", "alice", str(files["bruno"][5]), "--json", env=env))
    from voxid import Recognizer

    stored = Recognizer.load(registry=None).card.scoring.threshold
    assert same["threshold"] == other["threshold"] == pytest.approx(stored)  # its own, used
    assert same["score"] > other["score"]
    result = json.loads(run("identify", *(str(files[s][6]) for s in files), "--json", env=env))
    named = [result[str(files[s][6])]["candidates"][0]["name"] for s in files]
    assert named == list(files)  # every voice ranked first among the three enrolled


def test_shipped_files_are_never_written(waveform_store, tmp_path, one_torch_thread):
    before = resolve("base", "pt").read_bytes()
    with pytest.raises(ModelError, match="read-only"):
        CliRunner().invoke(app, ["calibrate", "--data", str(waveform_store)],
                           catch_exceptions=False)  # fmt: skip
    with pytest.raises(ModelError, match="read-only"):
        from voxid.lda import fit_run_lda

        fit_run_lda("base", waveform_store)
    with pytest.raises(ModelError, match="read-only; to adapt its LDA projection"):
        from voxid.lda import adapt_run_lda

        adapt_run_lda("base", waveform_store)
    copy = tmp_path / "my_base.pt"
    # --force: 2 val files of 4 speakers give 48 non-target trials, too few for FAR 1 %.
    args = ["--data", str(waveform_store), "--out", str(copy), "--n-enroll", "1", "--force"]
    args.append("--json")
    report = json.loads(run("calibrate", *args))
    assert report["saved_to"] == [str(copy)]
    from voxid.checkpoint import read_checkpoint

    assert read_checkpoint(copy)["voxid"]["threshold"] == pytest.approx(report["threshold"])
    assert resolve("base", "pt").read_bytes() == before


def test_fine_tune_from_base(waveform_store, speech_wav, tmp_path, one_torch_thread):
    import torch

    from voxid.checkpoint import load_checkpoint, read_card
    from voxid.config import load_config
    from voxid.training.run import train

    cfg = load_config(
        "finetune",
        ["epochs=1", "freeze_encoder_epochs=1", "augment.spec_augment=false", "batch_size=16"],
    )
    assert cfg.init == "base"
    result = train(cfg, waveform_store, tmp_path / "run", progress=False)
    card, tuned = load_checkpoint(result.model_path)
    _, base = load_checkpoint("base")
    assert card.init == "base" and tuned.n_classes == 4
    # Frozen for its one epoch: every encoder weight is the base model's (BatchNorm's
    # running statistics are not weights and follow the new data).
    for (name, p), q in zip(tuned.encoder.named_parameters(), base.encoder.parameters(),
                            strict=True):  # fmt: skip
        assert torch.equal(p, q), name
    # Still an embedding model: it verifies like any run.
    from voxid import Recognizer

    rec = Recognizer.load(result.model_path, registry=tmp_path / "r.db")
    assert rec.embed(speech_wav).shape == (192,)  # speech: white noise is refused as none
    # Same network, same input length: short speech is embedded as the base embeds it.
    base_card = read_card("base")
    assert base_card.audio.min_input_seconds == 2.0
    assert card.audio.min_input_seconds == base_card.audio.min_input_seconds
    assert rec.backend.policy.min_input_seconds == 2.0


def test_fine_tune_imprints_its_head_from_the_base_encoder(
    waveform_store, tmp_path, one_torch_thread
):
    import numpy as np
    import torch

    from voxid.checkpoint import load_checkpoint
    from voxid.config import load_config
    from voxid.data.loader import StoreDataset
    from voxid.training.run import train

    # lr=0: nothing trains, so the head is the imprint itself.
    overrides = ["epochs=1", "lr=0", "head_init=imprint", "augment.spec_augment=false",
                 "augment.noise_prob=0", "batch_size=16"]  # fmt: skip
    result = train(load_config("finetune", overrides), waveform_store, tmp_path / "run",
                   progress=False)  # fmt: skip
    card, tuned = load_checkpoint(result.model_path)
    _, base = load_checkpoint("base")
    base.eval()
    train_items = StoreDataset(waveform_store, split="train", include_augmented=True)
    names = list(card.labels)
    sums = np.zeros((len(names), 192))
    with torch.no_grad():
        for i in range(len(train_items)):
            wav, label = train_items[i]
            encoded = base.encoder(base.frontend(wav.unsqueeze(0)), None)
            sums[label] += torch.nn.functional.normalize(encoded, dim=1)[0].double().numpy()
    assert [train_items.info.speakers[i] for i in range(len(names))] == names
    means = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    head = torch.nn.functional.normalize(tuned.head.weight.detach(), dim=1).double().numpy()
    # Each class's row is that speaker's mean base embedding (batches pad, so not exactly).
    assert np.diag(head @ means.T).min() > 0.99
    # A random head has rows nowhere near the voices.
    overrides.remove("head_init=imprint")
    other = train(load_config("finetune", overrides),
                  waveform_store, tmp_path / "random", progress=False)  # fmt: skip
    _, untouched = load_checkpoint(other.model_path)
    rand = torch.nn.functional.normalize(untouched.head.weight.detach(), dim=1).double().numpy()
    assert np.diag(rand @ means.T).max() < 0.5


def test_soup_is_the_mean_of_its_seeds_and_resumes(waveform_store, tmp_path, one_torch_thread):
    import torch

    from voxid import Recognizer
    from voxid.checkpoint import load_checkpoint, read_checkpoint
    from voxid.config import load_config
    from voxid.errors import ConfigError
    from voxid.training.run import train

    cfg = load_config("finetune", ["epochs=1", "soup=2", "head_init=imprint", "batch_size=16",
                                   "mode=authenticate", "members=[alice]",
                                   "auth_scoring=speakers"])  # fmt: skip
    out = tmp_path / "soup"
    result = train(cfg, waveform_store, out, progress=False)
    assert result.metrics["souped_seeds"] == [0, 1]
    assert set(result.metrics["members"]) == {"seed0", "seed1"}
    assert result.threshold is not None  # chosen for the soup on validation, stored with it
    members = [read_checkpoint(out / f"seed{k}" / "best.ckpt")["state_dict"] for k in (0, 1)]
    soup = read_checkpoint(out / "best.ckpt")["state_dict"]
    key = "model.head.weight"
    assert not torch.equal(members[0][key], members[1][key])  # two seeds, two runs
    assert torch.allclose(soup[key], (members[0][key] + members[1][key]) / 2, atol=1e-6)
    card, model = load_checkpoint(result.model_path)
    assert card.scoring.threshold == pytest.approx(result.threshold)
    assert torch.equal(model.head.weight, soup[key])
    rec = Recognizer.load(result.model_path, registry=tmp_path / "r.db")
    assert rec.card.scoring.threshold == pytest.approx(result.threshold)
    # A second start in the same folder is refused; a resume keeps finished members and
    # trains the one that is missing.
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, waveform_store, out, progress=False)
    kept = (out / "seed0" / "model.pt").stat().st_mtime_ns
    import shutil

    shutil.rmtree(out / "seed1")
    again = train(cfg, waveform_store, out, resume=True, progress=False)
    assert (out / "seed0" / "model.pt").stat().st_mtime_ns == kept
    assert (out / "seed1" / "model.pt").is_file()
    assert again.threshold == pytest.approx(result.threshold)  # seeded: the same soup


def test_wise_fine_tune_is_between_the_base_and_the_tuned_run_and_keeps_its_lda(
    waveform_store, tmp_path, one_torch_thread
):
    import torch

    from voxid import Recognizer
    from voxid.checkpoint import PREFIX, load_checkpoint, read_card, read_checkpoint
    from voxid.config import load_config
    from voxid.errors import ConfigError
    from voxid.lda import adapt_run_lda
    from voxid.training.run import train

    overrides = ["epochs=1", "head_init=imprint", "batch_size=16"]
    tuned = train(load_config("finetune", overrides), waveform_store, tmp_path / "tuned",
                  progress=False)  # fmt: skip
    assert "from_init" not in tuned.metrics  # wise=1, keep_lda=false: the run as trained
    cfg = load_config("finetune", [*overrides, "wise=0.25", "keep_lda=true"])
    out = tmp_path / "wise"
    result = train(cfg, waveform_store, out, progress=False)
    assert result.metrics["from_init"] == {"init": "base", "wise": 0.25, "keep_lda": True}
    base_card, base = load_checkpoint("base")
    start = {PREFIX + k: v.double() for k, v in base.state_dict().items()}
    moved = read_checkpoint(tuned.best_ckpt)["state_dict"]
    mixed = read_checkpoint(out / "best.ckpt")["state_dict"]
    key = "model.encoder.layer1.conv.weight"
    # Training is seeded: the same run, then a quarter of the way from the base to it.
    want = 0.75 * start[key] + 0.25 * moved[key].double()
    assert torch.allclose(mixed[key].double(), want, atol=1e-5)
    assert not torch.allclose(mixed[key], moved[key], atol=1e-5)
    assert torch.equal(mixed["model.head.weight"], moved["model.head.weight"])
    # The base's LDA and cohort are the run's, in model.pt too.
    card, model = load_checkpoint(result.model_path)
    assert torch.equal(model.projection.weight, base.projection.weight)
    assert torch.equal(model.projection.cohort, base.projection.cohort)
    assert card.scoring.projection["from"] == "base"
    assert card.scoring.projection["speakers"] == base_card.scoring.projection["speakers"]
    rec = Recognizer.load(result.model_path, registry=tmp_path / "r.db")
    assert rec.card.model.embedding_dim == base.projection.out_dim
    # A resume of the finished run does not move the weights twice.
    again = train(cfg, waveform_store, out, resume=True, progress=False)
    assert torch.equal(read_checkpoint(out / "best.ckpt")["state_dict"][key], mixed[key])
    assert again.metrics["from_init"] == result.metrics["from_init"]
    # The kept LDA adapts to the user's recordings like the base's.
    report = adapt_run_lda(out, waveform_store)
    assert report.n_speakers > 1
    assert read_card(out).scoring.projection["adapted"]["weight"] == 0.2
    # A starting model without an LDA is refused before any training.
    bare = load_config("finetune", [*overrides, f"init={tuned.model_path}", "keep_lda=true"])
    with pytest.raises(ConfigError, match=r"keep_lda: .* has no LDA projection to keep"):
        train(bare, waveform_store, tmp_path / "bare", progress=False)
    assert not (tmp_path / "bare").exists()


def test_fine_tune_keeps_a_store_rule_of_its_own():
    from voxid.training.run import inherited_audio_config

    store = {"chunk": {"seconds": 1.0}, "normalize": None}
    assert inherited_audio_config(store, None) == store
    assert inherited_audio_config(store, "base")["chunk"] == {
        "seconds": 1.0,
        "min_input_seconds": 2.0,
    }
    own = {"chunk": {"seconds": 1.0, "min_input_seconds": 1.5}}
    assert inherited_audio_config(own, "base") == own
    # 3-s chunks are longer than the rule: a card with it would be invalid, so none is set.
    longer = {"chunk": {"seconds": 3.0}}
    assert inherited_audio_config(longer, "base") == longer


def test_fine_tune_refuses_another_architecture(waveform_store, tmp_path):
    from voxid.config import load_config
    from voxid.training.run import train

    cfg = load_config("crnn", ["init=base", "epochs=1"])
    with pytest.raises(ConfigError, match=r"init: .* is a ecapa model"):
        train(cfg, waveform_store, tmp_path / "run", progress=False)
    cfg = load_config("finetune", ["model.channels=128", "epochs=1"])
    with pytest.raises(ConfigError, match="does not fit"):
        train(cfg, waveform_store, tmp_path / "run2", progress=False)


@pytest.mark.slow
def test_wheel_carries_the_model_and_works_from_a_clean_venv(tmp_path, speech_wav):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(REPO)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = dist.glob("voxid-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("base.onnx", "base.pt", "models.json", "MODEL_CARD.md"):
        assert f"voxid/pretrained/{name}" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    # The new venv gets voxid from the wheel alone; its dependencies (torch, onnxruntime...)
    # come from the test environment's site-packages, listed after the venv's own.
    site = next((venv / "lib").glob("python*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz_deps.pth").write_text("\n".join(deps) + "\n")
    code = (
        "import voxid, sys; from voxid import Recognizer; r = Recognizer.load(registry=None); "
        f"e = r.embed({str(speech_wav)!r}); print(voxid.__file__, e.shape, r.threshold)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    proc = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert str(venv) in proc.stdout and "(192,)" in proc.stdout


def test_serve_and_listen_default_to_the_base_model(speech_corpus, tmp_path):
    import httpx

    from voxid.server.background import free_port

    db = tmp_path / "speakers.db"
    alice = sorted((speech_corpus / "alice").glob("*.wav"))
    run("enroll", "alice", *map(str, alice[:3]), "-r", str(db))
    port = free_port()
    env = {**os.environ, "VOXID_API_KEY": "k" * 20, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxid", "serve", "--registry", str(db), "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        from test_server import _wait_up

        _wait_up(url, proc)
        with open(alice[4], "rb") as fh:
            r = httpx.post(f"{url}/verify", data={"name": "alice"}, files={"file": fh}, timeout=60)
        assert r.status_code == 200, r.text
        from voxid import Recognizer

        assert r.json()["threshold"] == pytest.approx(Recognizer.load(registry=None).threshold)
    finally:
        proc.kill()
        proc.wait(10)
    listen = subprocess.run(
        [sys.executable, "-m", "voxid", "listen", "--registry", str(db), "--input",
         str(alice[5]), "--fast", "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert listen.returncode == 0, listen.stderr
    assert [json.loads(line) for line in listen.stdout.splitlines()]


def test_base_tells_the_demo_flite_voices_apart_and_rejects_the_stranger(tmp_path):
    """The demo's base-model step: enrol ursula and victor, accept a third utterance of
    ursula, answer "unknown" for walter (three flite voices built from real people)."""
    from voxid import Recognizer
    from voxid.demo import synthesize_corpus

    corpus = synthesize_corpus(tmp_path / "voices", voices=("ursula", "victor", "walter"),
                               n_sentences=3)  # fmt: skip
    files = {s: sorted((corpus.root / s).glob("*.wav")) for s in corpus.speakers}
    rec = Recognizer.load(registry=tmp_path / "speakers.db")
    rec.enroll("ursula", files["ursula"][:2])
    rec.enroll("victor", files["victor"][:2])
    known = rec.identify(files["ursula"][2])
    assert known.name == "ursula" and known.accepted
    stranger = rec.identify(files["walter"][0])
    assert stranger.name == "unknown" and not stranger.accepted, stranger


def test_a_card_with_another_chunk_policy_is_not_mixed_into_the_registry(tmp_path, speech_wav):
    """The base model's weights re-shipped with another short-speech rule embed short speech
    differently: speakers enrolled under one policy refuse the other."""
    import torch

    from voxid import Recognizer
    from voxid.checkpoint import read_checkpoint
    from voxid.errors import ModelMismatch

    ckpt = read_checkpoint(resolve("base", "pt"))
    ckpt["voxid"]["audio_config"]["chunk"]["min_input_seconds"] = 3.0
    other = tmp_path / "base_3s.pt"
    torch.save(ckpt, other)
    db = tmp_path / "speakers.db"
    rec = Recognizer.load("base", registry=db)
    rec.enroll("alice", speech_wav)
    again = Recognizer.load(other, registry=db)
    assert again.model_fingerprint == rec.model_fingerprint  # the same weights
    with pytest.raises(ModelMismatch, match=r"another chunk policy \(min_input_seconds 2.0 -> 3.0"):
        again.enroll("bob", speech_wav)
    assert Recognizer.load("base", registry=db).identify(speech_wav).name == "alice"
