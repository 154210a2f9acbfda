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
