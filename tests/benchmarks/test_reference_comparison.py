"""benchmarks/reference_comparison.py: paired ratios, pinned children that record their own versions, the report."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "benchmarks" / "reference_comparison.py"
    spec = importlib.util.spec_from_file_location("reference_comparison", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_ratios_pair_the_ith_runs_of_each_side(bench):
    run = lambda cpu, n: {"sample": {"cpu": cpu, "wall": cpu}, "sampled": n}  # noqa: E731
    runs = {"reference": [run(40.0, 100), run(60.0, 100), run(45.0, 100)],
            "ours": [run(20.0, 100), run(20.0, 100), run(15.0, 100)]}
    paired = bench.paired_ratios(runs)
    assert paired["ratios"] == pytest.approx([2.0, 3.0, 3.0]) and paired["median"] == pytest.approx(3.0)
    assert (paired["min"], paired["max"]) == pytest.approx((2.0, 3.0))
    assert bench.paired_ratios({"reference": [], "ours": [run(1.0, 1)]})["median"] is None


def test_a_pinned_child_records_its_versions_and_cores_and_the_report_says_so(bench, tmp_path, monkeypatch):
    """Our side alone, sampling 4 crystals on the fixtures' MP-20 rows, pinned to one core."""
    import numpy as np
    import torch

    monkeypatch.setenv("ADIT_MP20_DIR", str(ROOT / "tests" / "fixtures" / "mp20"))
    monkeypatch.setenv("ADIT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "cmp"
    assert bench.main(["--sides", "ours", "--parts", "sample", "--repeats", "1", "--train-batches", "1",
                       "--batch-size", "2", "--num-samples", "4", "--steps", "2", "--sample-batch-size", "4",
                       "--pin", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    ours = result["runs"]["ours"][0]
    first = sorted(os.sched_getaffinity(0))[0]
    assert ours["versions"]["cpus"] == [first] and ours["pinned"] == [first]
    assert ours["versions"]["torch"] == torch.__version__ and ours["versions"]["numpy"] == np.__version__
    assert ours["sampled"] == 4 and result["settings"]["pin"] is True
    report = out.with_suffix(".md").read_text()
    assert "each pinned to the same core(s)" in report and f"torch {torch.__version__}" in report
    assert "--pin" in report and result["sample_paired_cpu_ratios"]["ratios"] == []
