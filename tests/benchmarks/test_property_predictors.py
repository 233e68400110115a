"""The property judges of benchmarks/qm9_properties.py and band_gap_conditioning.py: invariant features that learn."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def _load(name, folder="benchmarks"):
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the real-data helpers of tests/adit_torch, by path: this file must also run on its own
qm9_systems = _load("adit_model_data", "tests/adit_torch").qm9_systems


@pytest.fixture(scope="module")
def qm9_properties():
    return _load("qm9_properties")


@pytest.fixture(scope="module")
def band_gap():
    return _load("band_gap_conditioning")


def test_molecule_features_are_invariant_and_tell_molecules_apart(qm9_properties):
    from scipy.spatial.transform import Rotation

    mols = qm9_systems(6, skip=20)
    numbers = [np.asarray(m.numbers) for m in mols]
    positions = [np.asarray(m.positions) for m in mols]
    a = qm9_properties.features(numbers, positions)
    rng = np.random.default_rng(0)
    perms = [rng.permutation(len(x)) for x in positions]
    rot = [Rotation.random(random_state=i).apply(x) + 3.0 for i, x in enumerate(positions)]
    b = qm9_properties.features([z[p] for z, p in zip(numbers, perms)], [x[p] for x, p in zip(rot, perms)])
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert a.shape == (6, 5 + 15 * len(qm9_properties.CENTRES) + 29)
    assert np.array_equal(a[:, :5].sum(1), [len(z) for z in numbers])  # element counts
    assert len({tuple(row.round(3)) for row in a}) == 6  # six different molecules, six different rows
    # overlapping atoms of a bad sample give finite features, not an error
    bad = positions[0].copy()
    bad[1] = bad[0]
    assert np.isfinite(qm9_properties.features([numbers[0]], [bad])).all()


def test_the_molecule_predictor_learns_a_property_from_the_features(qm9_properties):
    mols = qm9_systems(120, skip=100)
    x = qm9_properties.features([np.asarray(m.numbers) for m in mols], [np.asarray(m.positions) for m in mols])
    y = np.stack([x[:, :5].sum(1), x[:, 1]], axis=1).astype(np.float64)  # atom and carbon counts
    predict = qm9_properties.train_predictor(x[:100], y[:100], epochs=40)
    err = np.abs(predict(x[100:]) - y[100:]).mean(0)
    assert (err < 0.5 * np.abs(y[100:] - y[:100].mean(0)).mean(0)).all()  # beats the mean guess by 2x
    # a collapsed sample (every atom on one point) is far outside the data: the judge stays in its range
    collapsed = qm9_properties.features([np.asarray(mols[0].numbers)], [np.zeros((len(mols[0].numbers), 3))])
    assert collapsed.max() > x.max() * 5  # its Coulomb eigenvalues explode
    span = y[:100].max(0) - y[:100].min(0)
    assert (np.abs(predict(collapsed)[0] - y[:100].mean(0)) < span).all()


def test_composition_features_and_element_table(band_gap):
    table = band_gap._element_table()
    assert table.shape == (100, len(band_gap.ELEMENT_PROPERTIES)) and np.isfinite(table).all()
    feats = band_gap.composition_features([np.array([8, 12]), np.array([8, 8, 12, 12]), np.array([3, 26, 8, 8])],
                                          table)
    assert feats[:, :100].sum(1) == pytest.approx([1, 1, 1])
    np.testing.assert_allclose(feats[0], feats[1])  # MgO and Mg2O2: one composition
    assert feats[2, 7] == pytest.approx(0.5) and feats[2, 2] == pytest.approx(0.25)  # O and Li fractions
    assert not np.allclose(feats[0], feats[2])
