"""benchmarks/reference_epochs.py: paired per-repeat epoch ratios and the report."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("reference_epochs", ROOT / "benchmarks" / "reference_epochs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(vae_cpu, dit_cpu, systems, cache=None):
    run = {"mp20_vae": {"cpu": vae_cpu, "wall": vae_cpu, "systems": systems},
           "mp20_dit": {"cpu": dit_cpu, "wall": dit_cpu, "systems": systems}}
    if cache is not None:
        run.update(load={"cpu": 0.5, "wall": 0.5}, mp20_latent_cache={"cpu": cache, "wall": cache})
    return run


def test_epoch_ratios_pair_the_repeats_and_the_report_lists_them(bench, tmp_path):
    runs = {"ours": [_run(10.0, 20.0, 1000, 2.0), _run(12.0, 20.0, 1000, 2.2), _run(10.0, 25.0, 1000, 2.1)],
            "reference": [_run(20.0, 50.0, 996), _run(20.0, 40.0, 996), _run(30.0, 50.0, 996)]}
    summary = bench.summarise(runs, ["mp20"])
    vae = summary["mp20_vae"]
    assert vae["ratios"] == pytest.approx([100 / 49.8, (1000 / 12) / 49.8, 100 / 33.2])
    assert vae["median"] == pytest.approx(100 / 49.8) and vae["ours_epoch_cpu_s"] == pytest.approx(10.0)
    assert summary["mp20_dit"]["ours_latent_cache_cpu_s"] == pytest.approx(2.1)
    result = {"settings": {"machine": "test", "date": "2026-12-06", "repeats": 3, "load_min": 1.0, "load_max": 1.2,
                           "reference_commit": "abc", "batch_size": 256, "cases": ["mp20"]},
              "inputs": {"mp20": {"crystals": 1000, "molecules": 0, "mean_atoms": 9.8}},
              "versions": {"ours": {"torch": "2.13.0", "numpy": "2.4.6"}}, "summary": summary, "command": "cmd"}
    bench.write_report(tmp_path / "e", result)
    md = (tmp_path / "e.md").read_text()
    assert "| mp20 | VAE | 20.0 | 10.0 | 50 / 100 | **2.01x** (1.67-3.01) |" in md
    assert "1,000 MP-20 training crystals and 0 QM9 training molecules" in md
