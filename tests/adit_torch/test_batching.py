"""Padded batches and the size-bucketing sampler on real MP-20 and QM9 systems."""

import numpy as np
import pytest
import torch
from adit_model_data import mp20_systems, qm9_systems

from adit_torch.batching import BucketBatchSampler, collate, padding_fraction
from adit_torch.errors import ConfigError, InvalidSystemError
from adit_torch.system import AtomicSystem


def test_collate_shapes_and_contents():
    crystals, molecules = mp20_systems(4), qm9_systems(4, skip=500)
    systems = crystals + molecules
    b = collate(systems)
    n_max = max(s.num_atoms for s in systems)
    assert b.atom_types.shape == (8, n_max) and b.pos.shape == (8, n_max, 3)
    assert b.num_atoms.tolist() == [s.num_atoms for s in systems]
    assert b.periodic.tolist() == [True] * 4 + [False] * 4
    assert b.dataset.tolist() == [0] * 4 + [1] * 4
    for i, s in enumerate(systems):
        n = s.num_atoms
        assert b.mask[i, :n].all() and not b.mask[i, n:].any()
        assert (b.atom_types[i, :n].numpy() == s.numbers).all() and (b.atom_types[i, n:] == 0).all()
        if s.is_periodic:
            np.testing.assert_allclose(b.lengths[i].numpy() * n ** (1 / 3), s.lengths, rtol=1e-5)
            np.testing.assert_allclose(np.degrees(b.angles[i].numpy()), s.angles, rtol=1e-5)
            assert (b.frac[i, :n] >= 0).all() and (b.frac[i, :n] < 1).all()
            # Cartesian positions agree with frac @ lattice
            np.testing.assert_allclose(b.pos[i, :n].numpy(), b.frac[i, :n].numpy() @ s.lattice, atol=1e-4)
        else:
            np.testing.assert_allclose(b.pos[i, :n].numpy().mean(0), 0, atol=1e-5)
            assert (b.frac[i] == 0).all() and (b.lengths[i] == 0).all()


def test_collate_rejects_bad_systems():
    with pytest.raises(InvalidSystemError):
        collate([])
    bad = AtomicSystem([0, 6], [[0, 0, 0], [1, 0, 0]], info={"id": "bad-one"})
    with pytest.raises(InvalidSystemError, match="bad-one"):
        collate([bad])


def test_bucket_sampler_covers_every_index_once_and_reduces_padding():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 30, size=500)
    sampler = BucketBatchSampler(counts, batch_size=32, shuffle=True, seed=3)
    batches = sampler.batches(epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))
    assert all(len(b) <= 32 for b in batches)
    random_batches = [list(range(i, min(i + 32, 500))) for i in range(0, 500, 32)]
    assert padding_fraction(counts, batches) < 0.1 < padding_fraction(counts, random_batches)
    # deterministic per (seed, epoch), different across epochs
    assert sampler.batches(epoch=0) == batches
    assert sampler.batches(epoch=1) != batches


def test_bucket_sampler_atom_budget_and_ranks():
    counts = np.array([5, 20, 7, 20, 3, 9, 11, 2, 18, 1] * 10)
    sampler = BucketBatchSampler(counts, max_atoms_per_batch=60, seed=0)
    for b in sampler.batches(0):
        assert counts[b].max() * len(b) <= 60
    r0 = BucketBatchSampler(counts, batch_size=8, seed=1, rank=0, world_size=2).batches(0)
    r1 = BucketBatchSampler(counts, batch_size=8, seed=1, rank=1, world_size=2).batches(0)
    assert len(r0) == len(r1)
    assert not set(map(tuple, r0)) & set(map(tuple, r1))
    with pytest.raises(ConfigError):
        BucketBatchSampler(counts, max_atoms_per_batch=10)
    with pytest.raises(ConfigError):
        BucketBatchSampler(counts)


def test_padding_fraction_exact():
    assert padding_fraction([2, 4], [[0, 1]]) == pytest.approx(1 - 6 / 8)
    assert padding_fraction([3, 3], [[0], [1]]) == 0.0


def test_batch_to_device_keeps_values():
    b = collate(qm9_systems(2, skip=100))
    assert torch.equal(b.to("cpu").pos, b.pos)
