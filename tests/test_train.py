"""Training end to end on tiny stores from the espeak corpus: runs, resume, early stopping,
authentication thresholds, the GMM baseline, sweeps, recipes and their errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from voxid.checkpoint import load_checkpoint, read_checkpoint
from voxid.config import PACKAGED, TrainConfig, apply_overrides, load_config
from voxid.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.conv_channels=[4,8,8]", "model.gru_hidden=16", "model.gru_layers=1",
        "model.mlp_hidden=16", "model.attention_channels=8", "model.embedding_dim=16",
        "batch_size=8", "lr=0.005", "model.margin=0.0", "model.scale=10", "model.dropout=0.1",
        "augment.spec_augment=false"]  # fmt: skip


@pytest.fixture(scope="module")
def stores(speech_corpus, tmp_path_factory) -> dict[str, Path]:
    """logmel, 16 kHz waveform and mfcc stores of 4 voices (train/val/test by utterance)."""
    from voxid.data import assign_splits, load_corpus
    from voxid.data.prepare import PrepareConfig, prepare
    from voxid.features import FeatureConfig

    corpus = assign_splits(load_corpus(speech_corpus), ratios=(0.5, 0.25, 0.25), seed=0)
    root = tmp_path_factory.mktemp("stores")
    configs = {"logmel": FeatureConfig.logmel(), "mfcc": FeatureConfig.mfcc(),
               "waveform": FeatureConfig.waveform(sample_rate=16000)}  # fmt: skip
    for kind, fc in configs.items():
        prepare(corpus, root / f"{kind}.h5", PrepareConfig(feature=fc), workers=1)
    return {kind: root / f"{kind}.h5" for kind in configs}


def _train(stores, out, *overrides, store="logmel", resume=False):
    from voxid.training.run import train

    cfg = load_config("crnn", [*TINY, *overrides])
    return train(cfg, stores[store], out, resume=resume, progress=False)


@pytest.fixture(scope="module")
def quick_run(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "quick"
    return _train(stores, out, "epochs=2", "mc_samples=3", "augment.spec_augment=true")


def test_run_folder_holds_everything(quick_run):
    out = quick_run.out_dir
    for name in ("best.ckpt", "last.ckpt", "model.pt", "config.yaml", "metrics.json"):
        assert (out / name).is_file(), name
    assert quick_run.model_path == out / "model.pt" and quick_run.best_ckpt == out / "best.ckpt"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == quick_run.metrics
    assert metrics["epochs_run"] == 2 and metrics["test"]["n"] > 0
    for split in ("val", "test"):
        assert 0.0 <= metrics[split]["macro_f1"] <= 1.0 and metrics[split]["loss"] > 0
        assert metrics[split]["mc_f1_std"] >= 0.0  # MC-dropout error bars
    saved = load_config(out / "config.yaml")
    assert saved.mc_samples == 3 and saved.hparams["gru_hidden"] == 16


def test_lightning_checkpoints_are_plain_and_self_describing(quick_run):
    fingerprints = set()
    for name in ("best.ckpt", "last.ckpt", "model.pt"):
        raw = torch.load(quick_run.out_dir / name, weights_only=True)  # no custom objects
        meta = raw["voxid"]
        assert meta["labels"] == ["alice", "bruno", "chloe", "david"]
        assert meta["data_fingerprint"] and meta["audio_config"]["sample_rate"] == 16000
        if name != "last.ckpt":
            fingerprints.add(meta["model_fingerprint"])
    assert len(fingerprints) == 1  # model.pt holds exactly the best weights
    _, best = load_checkpoint(quick_run.out_dir / "best.ckpt")
    _, infer = load_checkpoint(quick_run.out_dir / "model.pt")
    x = torch.randn(3, 30, 64)
    assert torch.allclose(best(x), infer(x))


def test_tensorboard_logs_per_batch_and_epoch(quick_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(quick_run.out_dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "train/lr"} <= tags
    assert {"val_loss", "val_precision", "val_recall", "val_f1", "val_mc_f1_std"} <= tags
    assert len(events.Scalars("train/loss")) > len(events.Scalars("val_f1"))


def test_resume_continues_epoch_and_optimizer(stores, tmp_path):
    out = tmp_path / "resumed"
    _train(stores, out, "epochs=1", "limit_train_batches=3")
    before = read_checkpoint(out / "last.ckpt")
    result = _train(stores, out, "epochs=2", "limit_train_batches=3", resume=True)
    after = read_checkpoint(out / "last.ckpt")
    assert (before["epoch"], before["global_step"]) == (0, 3)
    assert (after["epoch"], after["global_step"]) == (1, 6)
    adam = after["optimizer_states"][0]["state"][0]["step"]
    assert int(adam) == 6  # AdamW moments carried over, not restarted
    assert after["lr_schedulers"][0]["last_epoch"] == 2
    assert result.metrics["epochs_this_run"] == 1 and result.metrics["epochs_run"] == 2
    assert load_config(out / "config.yaml").epochs == 2


def test_weight_average_is_the_mean_of_the_window_and_resumes():
    from types import SimpleNamespace

    from voxid.training.average import WeightAverage

    net = torch.nn.BatchNorm1d(2)
    seen = WeightAverage(2, epochs=4)  # epochs 2 and 3 (0-based)
    for epoch in range(4):
        with torch.no_grad():
            net.weight.fill_(float(epoch))
        net.num_batches_tracked.fill_(10 * epoch)
        seen.on_train_epoch_end(SimpleNamespace(current_epoch=epoch), net)
        if epoch == 2:  # an interruption: a new callback restored from last.ckpt's state
            resumed = WeightAverage(2, epochs=4)
            resumed.load_state_dict(seen.state_dict())
            seen = resumed
    seen.on_train_epoch_end(SimpleNamespace(current_epoch=3), net)  # counted once
    mean = seen.average(net.state_dict())
    assert seen.epochs == [2, 3]
    assert torch.equal(mean["weight"], torch.full((2,), 2.5))
    assert mean["weight"].dtype == torch.float32
    assert int(mean["num_batches_tracked"]) == 30  # a count keeps its latest value


def _train_cli(stores, out, *overrides):
    """`voxid train crnn` (tiny, 2 batches an epoch) on the logmel store; its CliRunner result."""
    from typer.testing import CliRunner

    from voxid.cli import app

    args = ["train", "crnn", *TINY, *overrides, "limit_train_batches=2",
            "--data", str(stores["logmel"]), "-o", str(out), "-q"]  # fmt: skip
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    return outcome


def test_average_epochs_make_the_run_model(stores, tmp_path):
    out = tmp_path / "avg"
    outcome = _train_cli(stores, out, "epochs=3", "average_epochs=2", "patience=0")
    assert "model: the mean of epochs 2-3\n" in outcome.stdout, outcome.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["averaged_epochs"] == [1, 2]
    best, last = read_checkpoint(out / "best.ckpt"), read_checkpoint(out / "last.ckpt")
    assert best["averaged_epochs"] == [1, 2] and "optimizer_states" not in best
    key = "model.head.weight"
    assert not torch.equal(best["state_dict"][key], last["state_dict"][key])
    _, model = load_checkpoint(out / "model.pt")
    assert torch.equal(model.head.weight, best["state_dict"][key])
    # a window of one epoch is that epoch's weights, bit for bit
    one = _train(stores, tmp_path / "one", "epochs=2", "average_epochs=1", "patience=0",
                 "limit_train_batches=2")  # fmt: skip
    w1 = read_checkpoint(one.out_dir / "best.ckpt")["state_dict"]
    wl = read_checkpoint(one.out_dir / "last.ckpt")["state_dict"]
    assert all(torch.equal(w1[k], wl[k]) for k in wl)


def test_existing_run_and_missing_resume_are_refused(quick_run, stores, tmp_path):
    with pytest.raises(ConfigError, match="already holds a run"):
        _train(stores, quick_run.out_dir, "epochs=1")
    with pytest.raises(ConfigError, match=r"no last\.ckpt"):
        _train(stores, tmp_path / "fresh", "epochs=1", resume=True)


def test_early_stopping(stores, tmp_path):
    # No later epoch can beat the first by min_delta, so patience 1 stops after epoch 2.
    out = tmp_path / "es"
    outcome = _train_cli(stores, out, "epochs=6", "patience=1", "min_delta=1000")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_early"] is True
    assert metrics["epochs_run"] == 2 and metrics["best_epoch"] in (0, 1)
    # announced, not left for the reader of metrics.json to find
    best = metrics["best_epoch"] + 1
    line = f"stopped early at epoch 2 (no better {metrics['monitor']} for 1 epochs); best epoch"
    assert f"{line} {best}\n" in outcome.stdout, outcome.stdout


def test_authenticate_on_waveforms_stores_threshold(stores, tmp_path):
    # Alice is the member; bruno and chloe are seen outsiders; david is never trained on.
    result = _train(
        stores, tmp_path / "auth", "mode=authenticate", "members=[alice]",
        "speakers=[alice,bruno,chloe]", "epochs=2", "target_far=0.1", "balanced=true",
        "augment.noise_snr=[10,30]", "augment.spec_augment=true", store="waveform",
    )  # fmt: skip
    threshold = result.threshold
    assert threshold is not None and 0.0 <= threshold <= 1.0
    for name in ("model.pt", "best.ckpt"):
        card, _ = load_checkpoint(result.out_dir / name)
        assert card.scoring.threshold == pytest.approx(threshold)
        assert card.scoring.threshold_kind == "p_member" and card.mode == "authenticate"
        assert card.labels == ("outsider", "member") and card.members == ("alice",)
        assert card.train_speakers == ("alice", "bruno", "chloe")
        assert card.features["kind"] == "logmel"  # the model's, run on waveforms
    auth = result.metrics["test"]["authentication"]
    assert auth["n_outsiders_unseen"] > 0 and auth["n_outsiders_seen"] > 0
    assert 0.0 <= auth["far_unseen"] <= 1.0
    val_far = result.metrics["val"]["authentication"]["far"]
    assert val_far <= 0.1  # the threshold meets the target FAR where it was chosen


def test_authenticate_by_speakers_scores_member_cosine(stores, tmp_path):
    # N-way over alice, bruno, chloe; alice is the member; david is never trained on.
    result = _train(
        stores, tmp_path / "auth", "mode=authenticate", "members=[alice]",
        "auth_scoring=speakers", "speakers=[alice,bruno,chloe]", "epochs=2", "target_far=0.1",
    )  # fmt: skip
    card, _ = load_checkpoint(result.out_dir / "model.pt")
    assert card.labels == ("alice", "bruno", "chloe") and card.auth_scoring == "speakers"
    assert card.scoring.threshold_kind == "member_cosine" and -1.0 <= result.threshold <= 1.0
    test = result.metrics["test"]
    auth = test["authentication"]
    assert auth["n_outsiders_unseen"] > 0  # david's items are scored...
    assert test["n"] == auth["n_members"] + auth["n_outsiders_seen"]  # ...but are no class
    assert result.metrics["val"]["authentication"]["far"] <= 0.1
    # The member's class weight verifies alice without enrolment, as the weight bank does.
    from voxid.inference.export import load_backend

    assert load_backend(result.out_dir / "model.pt").has_class_bank


def test_authenticate_by_speakers_needs_a_cosine_head():
    from voxid.models import build_model
    from voxid.training.run import check_auth_scoring

    cfg = load_config("seed_cnn", ["mode=authenticate", "members=[alice]",
                                   "auth_scoring=speakers"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"auth_scoring: 'speakers'.*seed_cnn"):
        check_auth_scoring(cfg, build_model("seed_cnn", n_classes=3))
    check_auth_scoring(apply_overrides(cfg, ["auth_scoring=binary"]), None)  # the paper's head


def test_gmm_through_the_cli(stores, tmp_path):
    from typer.testing import CliRunner

    from voxid.cli import app

    out = tmp_path / "gmm"
    args = ["train", str(REPO / "configs" / "gmm.yaml"), "model.n_components=4",
            "--data", str(stores["mfcc"]), "-o", str(out), "-q"]  # fmt: skip
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    for name in ("model.npz", "model.json", "metrics.json", "config.yaml"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["top1"] >= 0.6  # four distinct voices: far above chance (0.25)
    card, clf = load_checkpoint(out)
    assert card.model.name == "gmm" and clf.n_classes == 4
    again = CliRunner().invoke(app, [*args, "--resume"])
    assert isinstance(again.exception, ConfigError) and "nothing to resume" in str(again.exception)


def test_precision_is_mixed_only_on_a_gpu():
    from typing import get_args

    from voxid.config import PRECISIONS
    from voxid.training.run import Precision, resolve_precision

    assert set(get_args(Precision)) == set(PRECISIONS) - {"auto"}  # the Trainer's type
    assert resolve_precision(TrainConfig(model="crnn", accelerator="cpu")) == "32-true"
    expected = "32-true"
    if torch.cuda.is_available():
        expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    assert resolve_precision(TrainConfig(model="crnn")) == expected
    assert resolve_precision(TrainConfig(model="crnn", precision="16-mixed")) == "16-mixed"


def test_bad_stores_give_clear_errors(stores, tmp_path):
    with pytest.raises(DataError, match="other feature settings"):
        _train(stores, tmp_path / "a", "epochs=1", store="mfcc")
    with pytest.raises(DataError, match="8000 Hz"):
        _train(stores, tmp_path / "b", "epochs=1", "features.sample_rate=8000", store="waveform")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"no hdf5 here")
    with pytest.raises(DataError, match="junk"):
        _train({"logmel": junk}, tmp_path / "c", "epochs=1")
    with pytest.raises(ConfigError, match="members: 'zoe'"):
        _train(stores, tmp_path / "d", "mode=authenticate", "members=[zoe]")


@pytest.mark.slow
def test_training_learns_the_voices(stores, tmp_path):
    result = _train(stores, tmp_path / "learn", "epochs=6")
    assert result.metrics["test"]["top1"] >= 0.5  # chance is 0.25


@pytest.mark.slow
def test_sweep_through_the_cli(stores, tmp_path):
    from typer.testing import CliRunner

    from voxid.cli import app

    out = tmp_path / "sweep"
    args = ["sweep", "crnn", *TINY, "limit_train_batches=2", "--data", str(stores["logmel"]),
            "--batch-sizes", "4,8", "--epochs", "1", "-o", str(out)]  # fmt: skip
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(r["batch_size"], r["epochs"], r["split"]) for r in rows] == [
        ("4", "1", "test"), ("8", "1", "test")]  # fmt: skip
    for row in rows:
        assert 0.0 <= float(row["f1"]) <= 1.0 and float(row["loss"]) > 0
    assert (out / "sweep.md").read_text().count("\n") == 4
    assert json.loads((out / "bs4-ep1" / "metrics.json").read_text())["epochs_run"] == 1
    # A finished cell is read back, not retrained: the second sweep touches no checkpoint.
    stamp = (out / "bs8-ep1" / "model.pt").stat().st_mtime_ns
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (out / "bs8-ep1" / "model.pt").stat().st_mtime_ns == stamp


# -- recipes -----------------------------------------------------------------------------


def test_packaged_recipes_load_and_match_the_repo_copies():
    names = sorted(p.stem for p in PACKAGED.glob("*.yaml"))
    assert names == [
        "base", "crnn", "ecapa", "ecapa_small", "finetune", "gmm", "resnet34", "seed_cnn"
    ]  # fmt: skip
    # base and finetune are recipes of ecapa_small's network (the shipped encoder's)
    network = {"base": "ecapa", "finetune": "ecapa"}
    for name in names:
        cfg = load_config(name)
        assert cfg.model == network.get(name, name.removesuffix("_small"))
        assert (REPO / "configs" / f"{name}.yaml").read_text() == (
            PACKAGED / f"{name}.yaml"
        ).read_text()
    assert load_config(REPO / "configs" / "crnn.yaml").to_dict() == load_config("crnn").to_dict()


def test_overrides_reach_nested_sections_with_yaml_types():
    cfg = apply_overrides(TrainConfig(model="crnn"), [
        "model.gru_hidden=64", "augment.spec_augment=true", "augment.noise_snr=[5, 20]",
        "lr=1e-2", "max_minutes=null", "members=[a,b]", "features.n_mels=40"])  # fmt: skip
    assert cfg.hparams == {"gru_hidden": 64} and cfg.augment.spec_augment is True
    assert cfg.augment.noise_snr == [5, 20] and cfg.lr == 0.01 and cfg.members == ["a", "b"]
    assert cfg.features == {"n_mels": 40}
    again = TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("batch_size=0", "batch_size: must be an integer >= 1"),
        ("bogus=1", "bogus: unknown key"),
        ("augment.colour=1", "augment.colour: unknown key"),
        ("model.channels=8", "model.channels: not a setting of crnn"),
        ("mode=authenticate", "members: authenticate mode needs"),
        ("auth_scoring=cosine", "auth_scoring: must be one of binary, speakers"),
        ("target_far=2", "target_far: must be in"),
        ("monitor=val_top5", "monitor: must be one of"),
        ("augment.noise_snr=[30,10]", "augment.noise_snr: must be"),
        ("lr", "overrides look like key=value"),
        ("epochs.x=1", "'epochs' is not a section"),
        ("average_epochs=3", "average_epochs: .*set patience=0"),
        ("average_epochs=-1", "average_epochs: must be an integer from 0 to epochs"),
        ("head_init=zeros", "head_init: must be one of random, imprint"),
        ("head_init=imprint", "head_init: imprint needs a pretrained encoder"),
        ("soup=0", "soup: must be an integer >= 1"),
        ("soup=2", "soup: averages runs that start alike"),
        ("wise=0", "wise: must be a number above 0 and at most 1"),
        ("wise=1.5", "wise: must be a number above 0 and at most 1"),
        ("wise=0.5", "wise: takes from the model a run starts from"),
        ("keep_lda=true", "keep_lda: takes from the model a run starts from"),
        ("keep_lda=maybe", "keep_lda: must be true or false"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("crnn", [override])


def test_bad_recipe_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("batch_size: 8\n")
    with pytest.raises(ConfigError, match="needs a name"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file or packaged recipe"):
        load_config("wav2vec")
