"""``adit relax`` and ``adit hull`` on real MP-20 crystals: outputs, per-structure failures, resume, rates."""

import json

import numpy as np
import pytest

from adit_torch.cli import main
from adit_torch.io import read_systems, write_systems


@pytest.fixture
def batch(tmp_path, by_id, chgnet):
    """Two real crystals around one with atoms on top of each other, as extxyz."""
    good, other = by_id("mp-1185360"), by_id("mp-972454")
    bad = good.copy()
    bad.info["id"] = "on-top"
    bad.positions[1] = bad.positions[0] + 0.05
    path = tmp_path / "in.extxyz"
    write_systems(path, [good, bad, other])
    return path


def test_relax_then_hull(batch, tmp_path, capsys):
    out, report = tmp_path / "relaxed.extxyz", tmp_path / "relax.json"
    assert main(["relax", str(batch), "--out", str(out), "--json", str(report), "--steps", "60", "--quiet"]) == 0
    data = json.loads(report.read_text())
    assert data["complete"] and data["num_structures"] == 3
    assert [r["status"] for r in data["structures"]][1] == "failed"
    assert "on-top: overlapping atoms" in data["structures"][1]["reason"]
    assert data["potential"]["name"] == "chgnet-0.3.0" and data["settings"]["steps"] == 60
    relaxed = read_systems(out)
    assert [s.info["index"] for s in relaxed] == [0, 2]
    assert [s.info["relaxed_from"] for s in relaxed] == ["mp-1185360", "mp-972454"]
    for s, rec in zip(relaxed, [data["structures"][0], data["structures"][2]]):
        assert s.info["total_energy"] == pytest.approx(rec["energy"])
        assert rec["energy"] <= rec["initial_energy"] + 1e-6
    assert "failed: on-top" in capsys.readouterr().err

    hull_json = tmp_path / "hull.json"
    assert main(["hull", str(out), "--relax-json", str(report), "--json", str(hull_json), "--quiet"]) == 0
    hull = json.loads(hull_json.read_text())
    per = hull["per_structure"]
    assert [r["index"] for r in per] == [0, 1, 2]
    assert per[1]["e_above_hull"] is None and "relaxation failed" in per[1]["reasons"][0]
    for rec in (per[0], per[2]):
        assert rec["energy_source"] == "file"
        assert -0.15 < rec["e_above_hull"] < 0.1  # real MP-20 phases sit near the CHGNet hull
    rates = hull["rates"]
    assert rates["counts"]["structures"] == 3 and rates["hull"] == "offline-mp20-chgnet"
    assert rates["potential"] == "chgnet-0.3.0"
    assert rates["metastable_rate"] == pytest.approx(sum(r["metastable"] for r in per) / 3)


def test_hull_without_energies_uses_static_predictions(tmp_path, mp20_small, chgnet):
    path = tmp_path / "mp20.extxyz"
    write_systems(path, mp20_small[:3])
    out = tmp_path / "hull.json"
    assert main(["hull", str(path), "--json", str(out), "--quiet"]) == 0
    per = json.loads(out.read_text())["per_structure"]
    expected = chgnet.predict_energies(mp20_small[:3])
    np.testing.assert_allclose([r["energy"] for r in per], expected, atol=1e-4)
    assert all(r["energy_source"] == "static chgnet-0.3.0" for r in per)


def test_resume_skips_finished_structures(batch, tmp_path):
    out, report = tmp_path / "relaxed.extxyz", tmp_path / "relax.json"
    args = ["relax", str(batch), "--out", str(out), "--json", str(report), "--steps", "20", "--quiet"]
    assert main([*args, "--save-every", "1"]) == 0
    first = json.loads(report.read_text())
    data = dict(first, complete=False, structures=first["structures"][:2])  # as if stopped after two
    report.write_text(json.dumps(data))
    assert main([*args, "--resume"]) == 0
    again = json.loads(report.read_text())
    assert again["complete"] and len(again["structures"]) == 3
    assert again["structures"][:2] == first["structures"][:2]  # untouched, not recomputed
    assert [s.info["index"] for s in read_systems(out)] == [0, 2]


def test_bad_arguments_exit_with_status_2(batch, tmp_path, capsys):
    assert main(["relax", str(batch), "--out", str(tmp_path / "x.cif")]) == 2
    assert "relaxed structures are written as extxyz" in capsys.readouterr().err
    assert main(["hull", str(batch), "--reference", str(tmp_path / "missing.json")]) == 2
    assert main(["relax", str(tmp_path / "nothing.extxyz"), "--out", str(tmp_path / "r.extxyz")]) == 2
