"""benchmarks/equivariant_comparison.py end to end on the real-data fixtures: both encoders trained through the
``adit`` command, then reconstructed, sampled and scored into one table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "equivariant_comparison.py"
FIXTURES = ROOT / "tests" / "fixtures"


def test_both_encoders_train_and_land_in_one_table(tmp_path, monkeypatch):
    monkeypatch.setenv("ADIT_MP20_DIR", str(FIXTURES / "mp20"))
    monkeypatch.setenv("ADIT_CACHE_DIR", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    for encoder in ("transformer", "equivariant"):
        subprocess.run([sys.executable, str(SCRIPT), "train", "--dataset", "mp20", "--encoder", encoder, "--runs",
                        str(runs), "--vae-minutes", "0.02", "--dit-minutes", "0.02"], check=True)
        record = json.loads((runs / f"mp20_{encoder}" / "comparison_run.json").read_text())
        assert record["encoder"] == encoder and record["vae_wall_s"] > 0 and record["dit_wall_s"] > 0
    out = tmp_path / "cmp"
    subprocess.run([sys.executable, str(SCRIPT), "evaluate", "--runs", str(runs), "--num-samples", "6",
                    "--val-size", "6", "--steps", "2", "--out", str(out), "--note", "test"], check=True)
    result = json.loads(out.with_suffix(".json").read_text())
    rows = {r["encoder"]: r for r in result["rows"]}
    assert set(rows) == {"transformer", "equivariant"}
    for row in rows.values():
        assert row["dataset"] == "mp20" and row["kind"] == "crystal"
        assert 1 <= row["reconstruction"]["num_val"] <= 6 and 0 <= row["reconstruction"]["crystal_match_rate"] <= 1
        assert 0 <= row["quality"]["validity"] <= row["quality"]["structural_validity"] <= 1
        assert row["sampling"]["cpu_s_per_1000"] > 0 and row["seed_paper"]["structural_validity"] > 0.99
    assert rows["equivariant"]["encoder_params"] != rows["transformer"]["encoder_params"]
    table = out.with_suffix(".md").read_text()
    assert "| mp20 | equivariant | 0.02 / 0.02 |" in table and "| 99.2% / 86.1% / 85.5% |" in table
    assert "| mp20 | transformer | 0.02 / 0.02 |" in table and "| 99.6% / 90.5% / 90.1% |" in table


def test_the_report_reads_molecule_rows():
    spec = importlib.util.spec_from_file_location("equivariant_comparison", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = {"dataset": "qm9", "encoder": "equivariant", "kind": "molecule",
           "train": {"vae_minutes": 8, "dit_minutes": 6},
           "reconstruction": {"molecule_match_rate_aligned": 0.25, "molecule_rmsd_aligned": 0.61},
           "vae_systems_per_s": 120.4, "dit_systems_per_s": None, "sampling": {"cpu_s_per_1000": 12.34},
           "quality": {"validity": 0.5, "uniqueness": 0.9}, "seed_paper": bench.SEED[("qm9", "equivariant")]}
    line = [x for x in bench.report([row], "note").splitlines() if x.startswith("| qm9")][0]
    assert line == ("| qm9 | equivariant | 8 / 6 | match 25.0%, RMSD 0.61 Å | 120 | - | 12.3 | 50.0% valid / 90.0% "
                    "unique | 91.5% / 98.0% |")
