"""EDA report and spectrogram images on the espeak-ng corpus."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch
from PIL import Image

from voxid.audio import load_audio
from voxid.data import assign_splits, load_corpus
from voxid.data.prepare import PrepareConfig, prepare
from voxid.eda import run_eda, safe_name, write_spectrogram_images
from voxid.errors import DataError
from voxid.features import FeatureConfig, build_frontend, colorize
from voxid.vad import VadConfig


@pytest.fixture(scope="module")
def manifest(speech_corpus, tmp_path_factory):
    """The speech corpus with a gender column, one hostile speaker name, one broken file."""
    root = tmp_path_factory.mktemp("eda")
    (root / "broken.wav").write_bytes(b"RIFF not really a wav file")
    path = root / "manifest.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "speaker", "gender"])
        for wav in sorted(speech_corpus.glob("*/*.wav")):
            spk = wav.parent.name
            w.writerow(
                [
                    str(wav),
                    "../../evil" if spk == "david" else spk,
                    "f" if spk in ("alice", "chloe") else "m",
                ]
            )
        w.writerow([str(root / "broken.wav"), "alice", "f"])
    return path


def test_report_from_corpus(manifest, tmp_path):
    summary = run_eda(manifest, tmp_path / "report", max_files=12)
    assert summary["files"] == 32 and summary["speakers"] == 4 and summary["skipped"] == 1
    assert summary["imbalance_ratio"] == 1.0
    assert 1.0 < summary["duration_min_s"] <= summary["duration_median_s"] < 10.0
    md = (tmp_path / "report" / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {
        "balance.png",
        "durations.png",
        "chunks.png",
        "column_gender.png",
        "mean_spectra.png",
        "tsne.png",
        "spectra_gender.png",
    } <= set(images)
    for name in images:
        assert (tmp_path / "report" / name).stat().st_size > 1000
    assert "broken.wav" in md and "imbalance ratio 1.0" in md


def test_report_from_store(speech_corpus, tmp_path):
    corpus = assign_splits(load_corpus(speech_corpus), seed=0)
    store = prepare(corpus, tmp_path / "s.h5", PrepareConfig(), workers=1).out_path
    summary = run_eda(store, tmp_path / "report", max_files=12)
    assert summary["files"] == 32 and summary["chunks"] > 32
    assert "column_split.png" in (tmp_path / "report" / "report.md").read_text()


def test_spectrogram_pngs_are_what_the_cnn_sees(manifest, tmp_path):
    full = load_corpus(manifest)
    corpus = full.with_items(full.items[::8])  # one file per speaker, and the broken one
    written, skipped = write_spectrogram_images(corpus, tmp_path / "img")
    assert written == 4 and len(skipped) == 1
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == [
        "alice",
        "bruno",
        "chloe",
        "evil",
    ]  # the hostile name stays inside the folder
    first = corpus.items[0]
    png = np.array(Image.open(tmp_path / "img" / "alice" / f"{first.path.stem}.png"))
    cfg = FeatureConfig.image()
    wav = VadConfig().apply(load_audio(first.path, cfg.sample_rate), cfg.sample_rate)
    with torch.inference_mode():
        rgb = colorize(build_frontend(cfg)(torch.from_numpy(wav)[None]))[0]
    assert png.shape == (200, 200, 3)
    # read back as the CNN's input: (3, time, mel) in [0, 1], equal to 8-bit precision
    back = torch.from_numpy(png).permute(2, 0, 1).float() / 255.0
    assert (back - rgb).abs().max().item() < 0.5 / 255 + 1e-6


def test_safe_name_and_errors(tmp_path):
    assert safe_name("..") == "_" and "/" not in safe_name("a/../../b")
    with pytest.raises(DataError):
        run_eda(tmp_path / "missing", tmp_path / "out")


def test_mean_spectra_colour_bar_is_labelled():
    from voxid.eda import _mean_spectra_figure

    fig = _mean_spectra_figure({"ann": [np.ones(8)], "bob": [np.zeros(8)]}, "logmel")
    assert fig.axes[1].get_ylabel() == "mean logmel value"


@pytest.mark.parametrize("n", [3, 12, 20])
def test_tsne_legend_outside_and_colours_apart(n):
    from matplotlib.colors import to_rgb

    from voxid.eda import _tsne_figure

    rng = np.random.default_rng(n)
    labels = [f"spk{k:02d}" for k in range(n) for _ in range(5)]
    fig = _tsne_figure(labels, rng.normal(size=(len(labels), 2)))
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == sorted(set(labels))
    fig.canvas.draw()
    box, axes_box = legend.get_window_extent(), ax.get_window_extent()
    assert box.x0 >= axes_box.x1  # beside the axes: it hides no cluster
    rgb = np.array([to_rgb(h.get_facecolor()[0]) for h in legend.legend_handles])
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)[np.triu_indices(n, 1)]
    assert dist.min() > 0.2, dist.min()  # no two speakers in near-identical colours
