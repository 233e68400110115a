"""Joint MP-20 + QM9 data: dataset ids, sampling proportions and atom-count histograms."""

from pathlib import Path

import numpy as np
import pytest

from adit_torch.datasets import load_dataset
from adit_torch.datasets.joint import JointDataset, atom_count_histogram, load_joint
from adit_torch.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return (load_dataset("mp20", "all", root=FIXTURES / "mp20", cache_dir=cache),
            load_dataset("qm9", "all", root=FIXTURES / "qm9", cache_dir=cache))


def test_histogram_counts_systems_by_size(parts):
    mp20, qm9 = parts
    for data in parts:
        hist = atom_count_histogram(data)
        assert hist.sum() == len(data) and len(hist) == data.num_atoms.max() + 1
        for n in np.unique(data.num_atoms):
            assert hist[n] == sum(1 for s in data if s.num_atoms == n)
    assert atom_count_histogram(qm9)[:3].tolist() == [0, 0, 0]
    padded = atom_count_histogram(mp20, max_atoms=40)
    assert len(padded) == 41 and padded.sum() == len(mp20)
    assert atom_count_histogram(list(mp20)).tolist() == atom_count_histogram(mp20).tolist()
    with pytest.raises(ConfigError, match="more than max_atoms=5"):
        atom_count_histogram(qm9, max_atoms=5)


def test_joint_indexing_and_ids(parts):
    mp20, qm9 = parts
    joint = JointDataset([mp20, qm9])
    assert len(joint) == len(mp20) + len(qm9)
    assert joint.dataset_ids.tolist() == [0] * len(mp20) + [1] * len(qm9)
    assert joint[0].is_periodic and joint[0].info["dataset_id"] == 0
    last = joint[len(joint) - 1]
    assert not last.is_periodic and last.info["dataset_id"] == 1 and last.info["id"] == qm9.ids[-1]
    np.testing.assert_array_equal(joint.num_atoms, np.concatenate([mp20.num_atoms, qm9.num_atoms]))
    assert set(joint.histograms()) == {"mp20", "qm9"}
    with pytest.raises(IndexError):
        joint[len(joint)]


def test_proportions_drive_sampling(parts):
    mp20, qm9 = parts
    joint = JointDataset([mp20, qm9], proportions=[3, 1])
    weights = joint.sample_weights()
    assert weights[: len(mp20)].sum() == pytest.approx(0.75) and weights.sum() == pytest.approx(1.0)
    draws = joint.sample_indices(20_000, seed=0)
    share = np.mean(joint.dataset_ids[draws] == 0)
    assert share == pytest.approx(0.75, abs=0.02)
    np.testing.assert_array_equal(draws, joint.sample_indices(20_000, seed=0))
    natural = JointDataset([mp20, qm9])
    assert natural.proportions[0] == pytest.approx(len(mp20) / len(joint))


@pytest.mark.parametrize("bad", [[1], [1, -1], [0, 0], [np.nan, 1]])
def test_bad_proportions(parts, bad):
    with pytest.raises(ConfigError, match="proportions"):
        JointDataset(list(parts), proportions=bad)


def test_load_joint(tmp_path):
    joint = load_joint("train", proportions=(0.5, 0.5), mp20_root=FIXTURES / "mp20", qm9_root=FIXTURES / "qm9",
                       cache_dir=tmp_path)
    assert [d.name for d in joint.datasets] == ["mp20", "qm9"]
    assert joint.proportions.tolist() == [0.5, 0.5]
