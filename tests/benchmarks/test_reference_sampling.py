"""benchmarks/reference_sampling.py: our side samples exactly the given atom counts; paired and equal-quality
ratios; the report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    path = ROOT / "benchmarks" / "reference_sampling.py"
    spec = importlib.util.spec_from_file_location("reference_sampling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_our_side_samples_the_given_counts_at_every_setting(bench, monkeypatch):
    from adit_torch.config import dit_config, to_dict, vae_config
    from adit_torch.sample import sample_systems

    made = []
    real = sample_systems

    def spy(*args, **kwargs):
        systems = real(*args, **kwargs)
        made.append((args[4], kwargs["solver"], kwargs["steps"], [s.num_atoms for s in systems]))
        return systems

    monkeypatch.setattr("adit_torch.sample.sample_systems", spy)
    data = {"counts_crystal": np.array([3, 5, 3]), "counts_molecule": np.array([7, 4, 9]),
            "hist_crystal_sizes": np.array([3, 5]), "hist_crystal_counts": np.array([2, 1]),
            "hist_molecule_sizes": np.array([4, 7, 9]), "hist_molecule_counts": np.array([1, 1, 1]),
            "sizes": json.dumps({"vae": to_dict(vae_config("XS")), "dit": to_dict(dit_config("XS"))})}
    args = bench.parse_args(["--num-samples", "3", "--steps", "2,3", "--ours", "heun:uniform:2"])
    rows = bench.run_ours(data, args)
    assert [(r["kind"], r["solver"], r["steps"]) for r in rows] == [
        (k, s, n) for k in ("crystal", "molecule") for s, n in (("euler", 2), ("euler", 3), ("heun", 2))]
    assert all(r["n"] == 3 and r["cpu"] > 0 for r in rows)
    assert [m[3] for m in made] == [[3, 5, 3]] * 3 + [[7, 4, 9]] * 3


def _runs(ref: list[float], ours: list[float], extra: list[float]):
    rows = lambda kind, solver, grid, steps, cpu: {"kind": kind, "solver": solver, "grid": grid,  # noqa: E731
                                                   "steps": steps, "n": 500, "cpu": cpu, "wall": cpu}
    return {"reference": [[rows("crystal", "euler", "reference", 100, c)] for c in ref],
            "ours": [[rows("crystal", "euler", "reference", 100, c), rows("crystal", "heun", "uniform", 10, e)]
                     for c, e in zip(ours, extra)]}


def test_paired_and_equal_quality_ratios(bench, tmp_path):
    args = bench.parse_args(["--kinds", "crystal", "--steps", "100"])
    summary = bench.summarise(_runs([150.0, 160.0, 140.0], [60.0, 50.0, 70.0], [10.0, 16.0, 14.0]), args)
    paired = summary["paired"][0]
    assert paired["ratios"] == pytest.approx([2.5, 3.2, 2.0]) and paired["median"] == pytest.approx(2.5)
    quality = summary["equal_quality"][0]
    assert quality["ours"] == "heun:uniform:10" and quality["ratios"] == pytest.approx([15.0, 10.0, 10.0])
    per = {(r["side"], r["solver"]): r["median"] for r in summary["cpu_s_per_1000"]}
    assert per["reference", "euler"] == pytest.approx(300.0) and per["ours", "heun"] == pytest.approx(28.0)
    result = {"settings": {"machine": "test", "date": "2026-12-06", "threads": 1, "sequential": False,
                           "repeats": 3, "load_min": 1.0, "load_max": 1.5, "reference_commit": "abc",
                           "num_samples": 500, "kinds": ["crystal"], "cfg_scale": 2.0, "batch_size": 256,
                           "reference_batch_size": 100},
              "inputs": {"mean_atoms_crystal": 9.8},
              "versions": {"ours": {"torch": "2.13.0", "numpy": "2.4.6"}}, "summary": summary,
              "command": bench.reproduce_command(args)}
    bench.write_report(tmp_path / "r", result)
    md = (tmp_path / "r.md").read_text()
    assert "| crystal | 100 | 300.0 | 120.0 | **2.50x** (2.00-3.20) |" in md
    assert "**10.0x** (10.0-15.0)" in md and (tmp_path / "r.png").stat().st_size > 0
    assert "--reference-path ADIT_REF" in md and "/tmp" not in md
