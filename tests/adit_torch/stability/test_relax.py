"""Relaxation with CHGNet on real MP-20 crystals: energy goes down, forces under the threshold, flags."""

import numpy as np
import pytest

from adit_torch.errors import ConfigError
from adit_torch.stability.relax import check_relaxed, relax_system, relax_systems, summarize
from adit_torch.system import AtomicSystem


def _rattled(system: AtomicSystem, sigma: float = 0.1, seed: int = 0) -> AtomicSystem:
    out = system.copy()
    out.positions = out.positions + np.random.default_rng(seed).normal(0.0, sigma, out.positions.shape)
    return out


def test_rattled_structure_relaxes_back(chgnet, by_id):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    original = by_id("mp-1185360")  # LiMnIr2, 4 atoms
    rattled = _rattled(original)
    result = relax_system(rattled, chgnet, fmax=0.05, steps=150)
    assert result.status == "converged", result.reason
    assert result.energy < result.initial_energy - 0.05  # the rattle cost energy; relaxing gives it back
    assert result.max_force < 0.05
    np.testing.assert_allclose(np.linalg.norm(result.forces, axis=1).max(), result.max_force)
    relaxed = result.system
    assert abs(result.volume_ratio - 1.0) < 0.05
    matcher = StructureMatcher()  # default tolerances (ltol 0.2, stol 0.3, angle_tol 5)
    rms = matcher.get_rms_dist(relaxed.to_pymatgen(), original.to_pymatgen())
    assert rms is not None and rms[0] < 0.1, rms
    assert relaxed.info["relaxed_from"] == "mp-1185360" and relaxed.info["converged"] is True
    assert relaxed.info["total_energy"] == pytest.approx(result.energy)


def test_step_limit_is_flagged_not_hidden(chgnet, by_id):
    result = relax_system(_rattled(by_id("mp-1185360"), seed=1), chgnet, fmax=0.001, steps=2)
    assert result.status == "unconverged" and not result.converged and result.ok
    assert result.steps == 2 and result.max_force > 0.001
    assert "not converged in 2 steps" in result.reason
    assert result.system.info["converged"] is False


def test_fixed_cell_keeps_the_lattice(chgnet, by_id):
    start = _rattled(by_id("mp-1185360"), seed=2)
    result = relax_system(start, chgnet, fmax=0.1, steps=30, relax_cell=False)
    assert result.ok
    np.testing.assert_allclose(result.system.lattice, start.lattice)
    assert result.energy <= result.initial_energy


def test_batch_goes_on_past_bad_structures(chgnet, by_id):
    good = by_id("mp-1185360")
    overlap = good.copy()
    overlap.info["id"] = "overlap"
    overlap.positions[2] = overlap.positions[1] + 0.1
    heavy = good.copy()
    heavy.info["id"] = "americium"
    heavy.numbers[0] = 95
    isolated = AtomicSystem.from_fractional([29, 28], [[0, 0, 0], [0.5, 0.5, 0.5]], np.eye(3) * 20.0,
                                            info={"id": "isolated"})
    results = relax_systems([overlap, good, heavy, isolated], chgnet, fmax=0.1, steps=5, progress=False)
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert [r.status for r in results] == ["failed", results[1].status, "failed", "failed"]
    assert results[1].ok
    assert "overlap: overlapping atoms" in results[0].reason
    assert "Am not supported" in results[2].reason
    assert "isolated" in results[3].reason and results[3].system is None
    counts = summarize(results)
    assert counts["failed"] == 3 and counts["num_structures"] == 4


def test_check_relaxed_flags_explosions(by_id):
    start = by_id("mp-1185360")
    assert check_relaxed(start, start.copy(), -10.0) == ""
    blown = start.copy()
    blown.lattice = blown.lattice * 2.0  # volume x8
    blown.positions = blown.positions * 2.0
    assert "volume changed by a factor 8" in check_relaxed(start, blown, -10.0)
    collapsed = start.copy()
    collapsed.positions[1] = collapsed.positions[0] + 0.2
    assert "atoms collapsed" in check_relaxed(start, collapsed, -10.0)
    assert "non-finite energy" in check_relaxed(start, start.copy(), float("nan"))
    nan_pos = start.copy()
    nan_pos.positions[0, 0] = np.nan
    assert "non-finite positions" in check_relaxed(start, nan_pos, -10.0)


def test_bad_settings_are_config_errors(chgnet, by_id):
    with pytest.raises(ConfigError, match="fmax must be > 0"):
        relax_system(by_id("mp-1185360"), chgnet, fmax=0.0)
    with pytest.raises(ConfigError, match="unknown optimiser 'SD'"):
        relax_system(by_id("mp-1185360"), chgnet, optimizer="SD")
