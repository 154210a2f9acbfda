"""BENCHMARKS.md is exactly what the benchmark runner renders from bench/results/*.json."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_page_matches_the_recorded_results(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_QUICK", raising=False)
    run_all = _run_all()
    page = run_all.render(ROOT / "bench" / "results", tmp_path / "BENCHMARKS.md")
    assert page.read_text() == (ROOT / "BENCHMARKS.md").read_text(), (
        "BENCHMARKS.md is stale: run `python bench/run_all.py --render`"
    )


def test_every_protocol_row_says_which_command_measured_it_and_when():
    """Protocol tables gather rows from several runs: each row names its own command."""
    import json

    for name in ("pa", "pb", "pc"):
        result = json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())
        assert result["command"] and result["date"] and result["machine"]["cpu_cores"]
        for row in result["rows"]:
            if str(row["model"]).startswith("reference:"):
                continue
            assert "bench/bench_protocols.py" in row["_command"], (name, row["model"])
            assert row["measured"].endswith("UTC"), (name, row["model"])


def _peers():
    spec = importlib.util.spec_from_file_location("peers", ROOT / "bench" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _asc30_like(noise: float, seed: int = 0):
    """30 speakers x 4 takes x 5 clips of embeddings: a direction per speaker plus noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, 32))
    speaker = np.repeat([f"{i:08d}" for i in range(1, 31)], 20)
    take = np.tile(np.repeat(["01", "02", "03", "04"], 5), 30)
    emb = centres[np.repeat(np.arange(30), 20)] + noise * rng.normal(size=(600, 32))
    return emb, speaker, take


def test_peer_rows_score_as_the_protocols_say():
    """The peer's P-A/P-B/P-C scoring: perfect on separable voices, chance on pure noise."""
    peers = _peers()
    clean = _asc30_like(0.05)
    assert peers.pa_row(*clean)["top1"] == 1.0
    pb, pc = peers.pb_row(*clean), peers.pc_row(*clean)
    assert pb["eer"] == 0.0 and pb["far_unseen_at_frr_0.02"] == 0.0
    # The threshold lets 1 % of seen outsiders' takes 01-03 in: members all pass it.
    assert pb["frr"] == 0.0 and pb["far_seen"] <= 0.01
    assert pc["eer"] == 0.0 and (pc["trials"], pc["targets"]) == (500, 50)
    noise = _asc30_like(1e3, seed=1)
    assert peers.pa_row(*noise)["top1"] < 0.2
    assert 0.3 < peers.pc_row(*noise)["eer"] < 0.7


def test_gmm_peer_verifies_separable_voices():
    """The GMM baseline's P-B/P-C scoring on frames drawn around one mean per speaker
    (chance would be an EER of 0.5). Normalising by a cohort costs a trial or two; in P-B
    more, as there a stranger far from every model can still sit nearer a member than the
    cohort's spread, the weakness the table shows for never-seen outsiders."""
    import numpy as np

    peers = _peers()
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, size=(30, 6))
    speaker = np.repeat([f"{i:08d}" for i in range(1, 31)], 8)
    take = np.tile(np.repeat(["01", "02", "03", "04"], 2), 30)
    feats = [rng.normal(centres[int(s) - 1], 0.3, size=(40, 6)) for s in speaker]
    pc = peers.gmm_pc_row(feats, speaker, take)
    assert pc["eer"] <= 0.05 and (pc["trials"], pc["targets"]) == (200, 20)
    pb = peers.gmm_pb_row(feats, speaker, take)
    assert pb["eer"] <= 0.1 and pb["far_seen"] == 0.0 and pb["frr"] == 0.0
