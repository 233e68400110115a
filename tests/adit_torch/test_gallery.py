"""`adit gallery`: real crystals and molecules drawn on a grid, titles from the structures, clear errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from adit_torch.cli import main
from adit_torch.system import AtomicSystem

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "evaluate"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_titles_name_formula_space_group_and_validity():
    from adit_torch.gallery import panel_title

    a = 5.64
    rocksalt = AtomicSystem(numbers=np.array([11] * 4 + [17] * 4),
                            positions=a * np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                                                    [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]]),
                            lattice=a * np.eye(3))
    assert panel_title(rocksalt, True) == "NaCl · SG 225 · valid"
    water = AtomicSystem(numbers=np.array([8, 1, 1]), positions=np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    assert panel_title(water) == "H2O"
    assert panel_title(water, False) == "H2O · invalid"


@pytest.mark.parametrize("source", ["crystals.csv", "molecules.extxyz"])
def test_the_command_draws_the_file_with_its_evaluation(source, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert main(["evaluate", str(FIXTURES / source), "--reference", "none", "--no-posebusters", "--workers", "1",
                 "--json", str(report), "--quiet"]) == 0
    records = json.loads(report.read_text())["per_structure"]
    out = tmp_path / "gallery.png"
    assert main(["gallery", str(FIXTURES / source), "--evaluation", str(report), "--num", "6", "--columns", "3",
                 "--out", str(out)]) == 0
    assert f"({min(6, len(records))} structures)" in capsys.readouterr().out
    width, height = _png_size(out)
    assert width == round(3 * 2.6 * 110) and height == round(2 * 2.6 * 110)
    if any(r["valid"] for r in records):
        valid_only = tmp_path / "valid.pdf"
        assert main(["gallery", str(FIXTURES / source), "--evaluation", str(report), "--valid-only",
                     "--out", str(valid_only)]) == 0
        assert valid_only.read_bytes()[:5] == b"%PDF-"


def test_bad_requests_are_clear_errors_and_write_nothing(tmp_path, capsys):
    source = str(FIXTURES / "molecules.extxyz")
    assert main(["gallery", source, "--out", str(tmp_path / "g.jpg")]) == 2
    assert "png, svg, pdf" in capsys.readouterr().err
    assert main(["gallery", source, "--valid-only", "--out", str(tmp_path / "g.png")]) == 2
    assert "--valid-only needs --evaluation" in capsys.readouterr().err
    wrong = tmp_path / "report.json"
    wrong.write_text(json.dumps({"per_structure": [{"index": 0, "valid": True}]}))
    assert main(["gallery", source, "--evaluation", str(wrong), "--out", str(tmp_path / "g.png")]) == 2
    assert "the report scores 1 structures" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*tmp*"))


def test_molecule_panels_have_bonds_and_a_2d_depiction():
    from ase.build import molecule

    from adit_torch.gallery import depiction_2d, molecule_bonds

    # ethanol: 8 bonds (C-C, C-O, O-H and five C-H); its depiction is an RGB(A) image with ink on it
    ethanol = molecule("CH3CH2OH")
    system = AtomicSystem(numbers=ethanol.numbers, positions=ethanol.positions)
    bonds = molecule_bonds(system)
    assert len(bonds) == 8 and all(i < j for i, j in bonds)
    image = depiction_2d(system)
    assert image is not None and image.shape[:2] == (220, 220)
    assert (image[..., :3] < 128).any() and (image[..., :3] > 200).any()  # lines on a white background
    # atoms stacked on each other: OpenBabel still gives a graph, or the panel says there is none
    broken = AtomicSystem(numbers=np.array([6, 6, 8]), positions=np.zeros((3, 3)) + [[0, 0, 0], [0, 0, 0.01],
                                                                                     [0, 0, 0.02]])
    result = depiction_2d(broken)
    assert result is None or result.shape[:2] == (220, 220)
