"""Symmetry-aware decoding (:mod:`adit_torch.symmetry`) on real MP-20 crystals and on the shipped model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adit_torch.cli import main
from adit_torch.errors import ConfigError
from adit_torch.evaluate.crystals import spacegroup_number
from adit_torch.io import read_systems
from adit_torch.symmetry import symmetrize
from adit_torch.system import MIN_DISTANCE, AtomicSystem

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def crystals() -> list[AtomicSystem]:
    """The 34 real MP-20 crystals of the fixtures (15 space groups), with Materials Project's labels."""
    return [s for path in sorted((FIXTURES / "mp20").glob("*.csv.gz")) for s in read_systems(path)]


def _shaken(system: AtomicSystem, rng, shift: float, strain: float) -> AtomicSystem:
    """``system`` with Gaussian noise of ``shift`` Å on every atom and ``strain`` on every lattice entry."""
    lattice = system.lattice * (1 + rng.normal(0, strain, (3, 3)))
    positions = system.frac_coords @ lattice + rng.normal(0, shift, system.positions.shape)
    return AtomicSystem(numbers=system.numbers, positions=positions, lattice=lattice, info=dict(system.info))


def test_real_crystals_keep_their_group_and_do_not_move(crystals):
    """Materials Project's crystals are symmetric to its own tolerance: the snap moves them by less than 0.1 Å.

    Three of the 34 are supercells of their group's cell (Li4Mn4O8 twice Pnnm's cell along c, Fe4H8O8
    four cells of P-3m1): the setting's operations are not theirs, and the snap says so."""
    snapped = [symmetrize(s, s.info["spacegroup"]) for s in crystals]
    ok = [r for r in snapped if r.ok]
    assert len(ok) == 31, [(s.info["spacegroup"], r.reason) for s, r in zip(crystals, snapped) if not r.ok]
    for r in ok:
        assert r.max_shift < 0.1 and r.strain < 1e-6
    assert sum(r.max_shift < 1e-6 for r in ok) >= 25


def test_shaken_crystals_snap_back_onto_their_group_with_atoms_in_place(crystals):
    """0.1 Å of noise per coordinate and 1% lattice strain: P1 at the evaluator's 0.1 Å, the group after."""
    rng = np.random.default_rng(0)
    shaken = [_shaken(s, rng, 0.1, 0.01) for s in crystals]
    assert sum(spacegroup_number(s) == s.info["spacegroup"] for s in shaken) <= 3
    results = [symmetrize(s, s.info["spacegroup"]) for s in shaken]
    hits = 0
    for raw, shake, r in zip(crystals, shaken, results):
        if not r.ok:
            assert r.system is shake and r.reason
            continue
        out = r.system
        assert spacegroup_number(out) == raw.info["spacegroup"]
        hits += 1
        # same atoms in the same order and the same cell choice; each atom moved at most max_shift
        np.testing.assert_array_equal(out.numbers, shake.numbers)
        step = out.frac_coords - shake.frac_coords  # each atom keeps its periodic image
        assert np.linalg.norm(step @ out.lattice, axis=1).max() <= 1.0 + 1e-6 and out.min_distance() >= MIN_DISTANCE
        assert np.allclose(np.linalg.norm(out.lattice, axis=1), np.linalg.norm(shake.lattice, axis=1), rtol=0.15)
        assert out.info["symmetrized"] == raw.info["spacegroup"] and r.max_shift <= 1.0
        # the snap moves atoms back towards the real crystal: closer to it than the noise put them
        assert r.rms_shift < 0.5
    assert hits >= 27, [(s.info["spacegroup"], r.reason) for s, r in zip(crystals, results) if not r.ok]


def test_a_structure_far_from_the_group_is_refused_and_kept(crystals):
    rng = np.random.default_rng(1)
    lattice = np.array([[5.1, 0.3, 0.2], [0.4, 6.3, 0.1], [0.9, 0.2, 7.7]])
    random = AtomicSystem.from_fractional([8, 8, 12, 14, 26], rng.random((5, 3)), lattice)
    for group in (225, 194, 62):
        r = symmetrize(random, group)
        assert not r.ok and r.system is random
    rocksalt = next(s for s in crystals if s.info["spacegroup"] == 225)
    assert not symmetrize(rocksalt, 194).ok  # a cubic crystal is not hexagonal
    assert "the lattice is not hexagonal" in symmetrize(rocksalt, 194).reason


def test_bad_input_is_a_clear_error(crystals):
    water = np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    molecule = AtomicSystem(numbers=np.array([8, 1, 1]), positions=water)
    with pytest.raises(ConfigError, match="needs a crystal"):
        symmetrize(molecule, 225)
    flat = AtomicSystem(numbers=np.array([8, 12]), positions=np.zeros((2, 3)), lattice=np.diag([4.0, 4.0, 0.0]))
    assert "degenerate" in symmetrize(flat, 225).reason
    for group in (0, 231):
        with pytest.raises(ConfigError, match="not in 1..230"):
            symmetrize(crystals[0], group)


def test_site_multiplicities_are_the_international_tables_over_the_lattice_points():
    from adit_torch.symmetry import site_multiplicities

    assert site_multiplicities(62) == (4, 8)  # Pnma: 4a 4b 4c 8d
    assert site_multiplicities(194) == (2, 4, 6, 12, 24)  # P6_3/mmc: 2a-2d, 4e 4f, 6g 6h, 12i-12k, 24l
    assert site_multiplicities(225) == (1, 2, 6, 8, 12, 24, 48)  # Fm-3m: 4a ... 192l over 4 lattice points
    assert site_multiplicities(166) == (1, 2, 3, 6, 12)  # R-3m, hexagonal axes over 3 lattice points
    assert site_multiplicities(1) == (1,)
    with pytest.raises(ConfigError, match="not in 1..230"):
        site_multiplicities(0)


def test_compatible_types_give_element_counts_the_group_can_hold(crystals):
    """Real Pnma crystals have every element in fours; decoder-like logits that put five atoms on
    one element are moved to the most probable counts in fours."""
    import torch

    from adit_torch.conditions import assign_types
    from adit_torch.symmetry import compatible_types

    for s in crystals:
        if s.info["spacegroup"] == 62:
            assert all(c % 4 == 0 for c in np.unique(s.numbers, return_counts=True)[1])
    rng = np.random.default_rng(0)
    logits = torch.as_tensor(rng.normal(0, 1, (20, 100)), dtype=torch.float32)
    logits[:, 8 - 1] += 4.0  # O
    logits[:5, 26 - 1] += 6.0  # five Fe
    logits[5:8, 12 - 1] += 6.0  # three Mg
    free = assign_types(logits)
    assert sorted(np.unique(free, return_counts=True)[1].tolist()) == [3, 5, 12]
    fitted = compatible_types(logits, 62)
    elements, counts = np.unique(fitted, return_counts=True)
    assert set(elements.tolist()) <= {8, 12, 26} and all(c % 4 == 0 for c in counts) and counts.sum() == 20
    # the change is the cheapest one: at most two atoms differ from the most probable types
    assert (fitted != free).sum() <= 2
    np.testing.assert_array_equal(compatible_types(logits, 225), free)  # Fm-3m holds any count
    np.testing.assert_array_equal(compatible_types(logits[:5], 62), assign_types(logits[:5]))  # 5 fits no way


def test_atom_counts_follow_the_training_crystals_of_the_asked_group(caplog):
    from adit_torch.recipes import space_group_size_histograms
    from adit_torch.sample_plan import draw_sizes_and_noise

    hist = space_group_size_histograms([4, 4, 8, 2, 6, 6, 3], [225, 225, 225, 0, 194, 194, 225])
    assert hist == {"194": {"6": 2}, "225": {"3": 1, "4": 2, "8": 1}}
    stats = {"num_atoms_hist": {"crystal": {"5": 10, "7": 10}}, "num_atoms_hist_by_space_group": hist}
    counts, _, _ = draw_sizes_and_noise(stats, "crystal", 50, 4, space_group=225)
    assert set(counts.tolist()) == {3, 4, 8}
    counts, _, _ = draw_sizes_and_noise(stats, "crystal", 20, 4, space_group=194, multiple_of=2)
    assert set(counts.tolist()) == {6}
    with caplog.at_level("WARNING"):
        counts, _, _ = draw_sizes_and_noise(stats, "crystal", 20, 4, space_group=62)
    assert set(counts.tolist()) <= {5, 7} and "space group 62: the model records no training crystal" in caplog.text


def test_shipped_model_samples_space_group_225_snapped_by_default(tmp_path, capsys):
    """The acceptance command ``--condition space_group=225`` on the shipped model, with and without the snap."""
    import ase.io

    from adit_torch.checkpoint import read_metadata
    from adit_torch.pretrained import pretrained_path

    by_group = read_metadata(pretrained_path("adit-xs-joint-cond"))["data"]["num_atoms_hist_by_space_group"]
    out = tmp_path / "fm3m.extxyz"
    assert main(["sample", "--model", "adit-xs-joint-cond", "--kind", "crystal", "--num-samples", "12",
                 "--steps", "6", "--solver", "heun", "--condition", "space_group=225", "--guidance",
                 "space_group=2", "--out", str(out), "--quiet"]) == 0
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["settings"]["symmetrize"] is True
    atoms = ase.io.read(out, index=":")
    assert {str(len(a)) for a in atoms} <= set(by_group["225"])
    snapped = [a for a in atoms if a.info.get("symmetrized")]
    assert summary["num_symmetrized"] == len(snapped) >= 3
    for a in snapped:
        assert spacegroup_number(AtomicSystem.from_ase(a)) == 225
    raw = tmp_path / "raw.extxyz"
    assert main(["sample", "--model", "adit-xs-joint-cond", "--kind", "crystal", "--num-samples", "4",
                 "--steps", "6", "--solver", "heun", "--condition", "space_group=225", "--no-symmetrize",
                 "--out", str(raw), "--quiet"]) == 0
    summary = json.loads(raw.with_suffix(".summary.json").read_text())
    assert summary["settings"]["symmetrize"] is False and "num_symmetrized" not in summary
    assert not any("symmetrized" in a.info for a in ase.io.read(raw, index=":"))
    capsys.readouterr()
    assert main(["sample", "--model", "adit-xs-joint-cond", "--kind", "crystal", "--num-samples", "2",
                 "--no-symmetrize", "--out", str(tmp_path / "x.extxyz"), "--quiet"]) != 0
    assert "--no-symmetrize applies to --condition space_group=N" in capsys.readouterr().err
    assert not (tmp_path / "x.extxyz").exists()
