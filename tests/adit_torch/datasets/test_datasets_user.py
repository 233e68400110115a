"""A user's own structures as training data: readers, canonical form, split, properties, errors, and a
real fine-tuning run of the shipped model on them through `adit train-vae --dataset PATH --init NAME`."""

import json

import numpy as np
import pytest

from adit_torch.cli import main
from adit_torch.datasets.user import load_user_dataset, split_positions
from adit_torch.errors import ConfigError, InvalidSystemError
from adit_torch.io import write_systems
from adit_torch.system import AtomicSystem
from tests.adit_torch.adit_model_data import mp20_systems, qm9_systems


@pytest.fixture
def own_molecules(tmp_path, monkeypatch):
    """12 real QM9 molecules in an extxyz file, each with a numeric property `gap` (eV)."""
    monkeypatch.setenv("ADIT_CACHE_DIR", str(tmp_path / "cache"))
    systems = qm9_systems(12, skip=20)
    for i, s in enumerate(systems):
        s.info = {"id": f"mine-{i}", "gap": 5.0 + 0.1 * i}
    path = tmp_path / "mine.extxyz"
    write_systems(path, systems)
    return path, systems


def test_an_extxyz_of_molecules_becomes_a_split_dataset_with_its_properties(own_molecules):
    path, systems = own_molecules
    (train,) = load_user_dataset(path, "train")
    (val,) = load_user_dataset(path, "val")
    (every,) = load_user_dataset(path, "all")
    assert len(train) + len(val) == len(every) == 12 and len(val) == 1
    assert train.dataset_id == val.dataset_id == 1  # the molecule slot
    assert not np.asarray(every.periodic).any()
    np.testing.assert_allclose(sorted(every.props["gap"]), [5.0 + 0.1 * i for i in range(12)])
    assert set(train.ids) | set(val.ids) == {f"mine-{i}" for i in range(12)}
    first = every[list(every.ids).index("mine-0")]
    np.testing.assert_allclose(first.positions.mean(0), 0.0, atol=1e-9)  # centred, as QM9
    np.testing.assert_allclose(first.distance_matrix(), systems[0].distance_matrix(), atol=1e-6)


def test_a_folder_of_cifs_gives_niggli_crystals_in_the_crystal_slot(tmp_path, monkeypatch):
    monkeypatch.setenv("ADIT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "cifs"
    folder.mkdir()
    crystals = mp20_systems(5)
    for i, c in enumerate(crystals):
        write_systems(folder / f"c{i}.cif", [c], kind="cif")
    (every,) = load_user_dataset(folder, "all")
    assert every.dataset_id == 0 and len(every) == 5 and np.asarray(every.periodic).all()
    for i in range(5):
        s = every[i]
        np.testing.assert_allclose(s.volume, s.canonical().volume)
        assert sorted(s.numbers) in [sorted(c.numbers) for c in crystals]


def test_split_is_deterministic_and_disjoint():
    a, b = split_positions(50), split_positions(50)
    assert np.array_equal(a["val"], b["val"]) and len(a["val"]) == 5
    assert not set(a["val"]) & set(a["train"]) and len(a["train"]) + len(a["val"]) == 50
    assert len(split_positions(1)["val"]) == 0


def test_bad_structures_are_named_or_skipped_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("ADIT_CACHE_DIR", str(tmp_path / "cache"))
    good = qm9_systems(4, skip=20)
    bad = AtomicSystem([6, 6], [[0, 0, 0], [0.1, 0, 0]])  # overlapping atoms
    path = tmp_path / "mixed.extxyz"
    path.write_text("".join(_xyz(s) for s in [*good[:2], bad, *good[2:]]))
    with pytest.raises(InvalidSystemError, match=r"mixed.extxyz: frame 2 .*overlapping atoms"):
        load_user_dataset(path, "all")
    (kept,) = load_user_dataset(path, "all", skip_invalid=True)
    assert len(kept) == 4
    with pytest.raises(ConfigError, match="no such file or folder"):
        load_user_dataset(tmp_path / "missing.extxyz")


def _xyz(s: AtomicSystem) -> str:
    from adit_torch.system import SYMBOLS

    lines = [str(s.num_atoms), 'Properties=species:S:1:pos:R:3 pbc="F F F"']
    lines += [f"{SYMBOLS[z]} {x:.6f} {y:.6f} {w:.6f}" for z, (x, y, w) in zip(s.numbers, s.positions)]
    return "\n".join(lines) + "\n"


def test_fine_tune_the_shipped_model_on_own_molecules(own_molecules, tmp_path):
    """`--dataset PATH --init adit-xs-joint`: the run starts from the shipped weights, trains on the
    user's file and records it as the dataset; an unknown path is a clear error before any work."""
    from adit_torch.checkpoint import read_metadata

    path, _ = own_molecules
    out = tmp_path / "ft"
    rc = main(["train-vae", "--dataset", str(path), "--init", "adit-xs-joint", "--out-dir", str(out),
               "--max-steps", "2", "--batch-size", "4", "--val-every", "2", "--ckpt-every", "2", "--quiet"])
    assert rc == 0
    meta = read_metadata(out / "vae.safetensors")
    assert meta["data"]["dataset"] == str(path) and meta["data"]["num_train"] == 11
    assert meta["data"]["num_atoms_hist"].keys() == {"molecule"}
    assert json.loads((out / "run_config.json").read_text())["init"].endswith("adit-xs-joint.safetensors")
    rc = main(["train-vae", "--dataset", str(tmp_path / "nothing.extxyz"), "--out-dir", str(tmp_path / "x"),
               "--max-steps", "1", "--quiet"])
    assert rc == 2 and not (tmp_path / "x" / "vae.safetensors").exists()
