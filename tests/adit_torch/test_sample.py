"""Sampling: atom-count histogram, cost-chosen padded batches, determinism, decoding to systems."""

from pathlib import Path

import numpy as np
import pytest
import torch

from adit_torch.config import DiTConfig, FlowConfig, VAEConfig
from adit_torch.dit import DiT
from adit_torch.errors import CheckpointError, ConfigError
from adit_torch.sample import sample_checkpoint, sample_systems
from adit_torch.sample_plan import draw_num_atoms, padded_groups, size_buckets
from adit_torch.vae import VAE

STATS = {"num_atoms_hist": {"crystal": {"2": 10, "5": 30}, "molecule": {"9": 1}},
         "latent_mean": [0.0] * 8, "latent_std": [1.0] * 8}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    dit = DiT(DiTConfig(d_model=32, num_layers=1, num_heads=4)).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return dit, VAE(VAEConfig(d_model=32, num_layers=1, num_heads=4)).eval()


def test_histogram_draws_follow_counts():
    counts = draw_num_atoms({"2": 10, "5": 30}, 4000, torch.Generator().manual_seed(0))
    assert set(counts.tolist()) == {2, 5}
    assert abs((counts == 5).mean() - 0.75) < 0.03


def test_size_buckets_have_no_padding():
    counts = np.array([3, 5, 3, 3, 5, 7])
    buckets = size_buckets(counts, batch_size=2)
    assert sorted(i for b in buckets for i in b) == list(range(6))
    assert all(len(set(counts[b])) == 1 and len(b) <= 2 for b in buckets)


def test_padded_groups_follow_the_cost_model():
    counts = draw_num_atoms({"2": 1, "3": 2, "8": 5, "20": 1}, 300, torch.Generator().manual_seed(1))
    for fixed, bs in ((0.0, 64), (8e-3, 64), (8e-3, 7), (1e3, 64)):
        groups = padded_groups(counts, bs, fixed, 220e-6)
        assert sorted(i for g in groups for i in g) == list(range(300))
        assert all(0 < len(g) <= bs for g in groups)
        maxes = [counts[g].max() for g in groups]
        assert all(counts[a].min() >= m for a, m in zip(groups[1:], maxes))  # contiguous in sorted order
        if fixed == 0.0:  # no per-call cost: never pad
            assert all(len(set(counts[g])) == 1 for g in groups)
        if fixed == 1e3:  # calls dominate: fewest possible calls
            assert len(groups) == -(-300 // bs)
    # 5 ms per call vs 0.22 ms per slot: the few small systems ride along with a bigger batch
    groups = padded_groups(np.array([2, 2, 3, 8, 8, 8, 8]), 64)
    assert len(groups) == 1


def test_samples_do_not_depend_on_the_grouping(models):
    """Batch size 1 (no padding) and one padded batch give the same systems for the same seed."""
    dit, vae = models
    kw = dict(steps=3, cfg_scale=2.0, seed=7, num_atoms=[5, 2, 2, 5, 3, 2], progress=False)
    one = sample_systems(dit, vae, FlowConfig(), STATS, "crystal", 6, batch_size=1, **kw)
    padded = sample_systems(dit, vae, FlowConfig(), STATS, "crystal", 6, batch_size=6, **kw)
    assert [s.num_atoms for s in padded] == [5, 2, 2, 5, 3, 2]
    for a, b in zip(one, padded):
        assert a.num_atoms == b.num_atoms and np.array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-4)
        np.testing.assert_allclose(a.lattice, b.lattice, atol=1e-4)


def test_sampling_is_deterministic_for_a_seed(models):
    dit, vae = models
    kw = dict(steps=4, cfg_scale=2.0, batch_size=8, progress=False)
    a = sample_systems(dit, vae, FlowConfig(), STATS, "crystal", 12, seed=3, **kw)
    b = sample_systems(dit, vae, FlowConfig(), STATS, "crystal", 12, seed=3, **kw)
    c = sample_systems(dit, vae, FlowConfig(), STATS, "crystal", 12, seed=4, **kw)
    assert len(a) == 12 and all(s.is_periodic for s in a)
    assert {s.num_atoms for s in a} <= {2, 5}
    for x, y in zip(a, b):
        assert np.array_equal(x.numbers, y.numbers) and np.array_equal(x.positions, y.positions)
    assert any(not np.allclose(x.positions, y.positions) for x, y in zip(a, c) if x.num_atoms == y.num_atoms)
    assert [s.info["id"] for s in a] == [f"sample-{i}" for i in range(12)]


def test_molecules_and_user_atom_counts(models):
    dit, vae = models
    mols = sample_systems(dit, vae, FlowConfig(), STATS, "molecule", 3, steps=2, num_atoms=6, progress=False)
    assert all(not s.is_periodic and s.num_atoms == 6 for s in mols)


def test_sampling_errors(models):
    dit, vae = models
    stats = {"num_atoms_hist": {"crystal": {"4": 1}}}
    with pytest.raises(CheckpointError, match="not trained on molecules"):
        sample_systems(dit, vae, FlowConfig(), stats, "molecule", 2, progress=False)
    with pytest.raises(ConfigError):
        sample_systems(dit, vae, FlowConfig(), stats, "polymer", 2, progress=False)
    with pytest.raises(ConfigError):
        sample_systems(dit, vae, FlowConfig(), stats, "crystal", 2, steps=0, progress=False)


def test_shipped_tiny_checkpoint_samples_both_kinds():
    """tests/fixtures/checkpoints/tiny_dit.safetensors (trained on the fixtures) samples on its own."""
    path = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints" / "tiny_dit.safetensors"
    for kind in ("crystal", "molecule"):
        systems, summary = sample_checkpoint(path, kind, 4, steps=3, seed=0, progress=False)
        assert summary["num_written"] == 4 and len(systems) == 4
        assert all(s.is_periodic == (kind == "crystal") for s in systems)


def test_bf16_autocast_samples_follow_the_fp32_ones(models):
    """``precision="bf16"``: the DiT runs under bfloat16 autocast, the latents come back float32 and
    close to the float32 run's (same noise); an unknown precision is refused."""
    from adit_torch.sample import sample_latents

    dit, _ = models
    runs = {p: list(sample_latents(dit, FlowConfig(steps=4), STATS, "crystal", 6, progress=False, precision=p))
            for p in ("fp32", "bf16")}
    for (_, z32, mask, _, _), (_, z16, _, _, _) in zip(runs["fp32"], runs["bf16"]):
        assert z16.dtype == torch.float32
        scale = z32[mask].abs().max()
        assert (z16[mask] - z32[mask]).abs().max() < 0.05 * scale
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16"):
        next(sample_latents(dit, FlowConfig(steps=2), STATS, "crystal", 2, progress=False, precision="fp8"))


def test_gpu_sampling_benchmark_runs_on_the_cpu(tmp_path):
    """benchmarks/gpu_sampling.py, the one-command GPU timing, runs end to end on the CPU at toy settings."""
    import json
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_sampling.py"
    out = tmp_path / "gpu.json"
    subprocess.run([sys.executable, str(script), "--device", "cpu", "--sizes", "XS", "--num", "8", "--steps", "2",
                    "--few-steps", "2", "--batch-size", "8", "--repeats", "1", "--out", str(out)],
                   check=True, capture_output=True)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["precision"], r["solver"]) for r in rows] == [("fp32", "euler"), ("fp32", "heun"),
                                                              ("bf16", "euler"), ("bf16", "heun")]
    assert all(0 < r["seconds_per_1000_integration"] <= r["seconds_per_1000_with_decoding"] for r in rows)


def test_chunks_give_the_same_samples_in_the_same_order(models):
    """iter_systems streams the samples of sample_systems, chunk by chunk, unchanged."""
    from adit_torch.sample import iter_systems

    dit, vae = models
    whole = sample_systems(dit, vae, FlowConfig(steps=3), STATS, "crystal", 7, progress=False, seed=4)
    parts = list(iter_systems(dit, vae, FlowConfig(steps=3), STATS, "crystal", 7, progress=False, seed=4, chunk=3))
    assert [len(p) for p in parts] == [3, 3, 1]
    for a, b in zip(whole, [s for p in parts for s in p]):
        assert a.info["id"] == b.info["id"] and np.array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-4)


def test_sample_noise_is_drawn_a_block_at_a_time(monkeypatch):
    """A sample's noise depends on the seed, its index and the counts only; the first block is one up-front draw."""
    import adit_torch.sample_plan as plan

    monkeypatch.setattr(plan, "NOISE_BLOCK", 4)
    counts = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    noise = plan.SampleNoise(offsets, 8, seed=3)
    rows = [noise[j] for j in range(10)]
    assert [r.shape for r in rows] == [(int(n), 8) for n in counts]
    assert len(noise._blocks) == 3
    first = torch.randn(int(counts[:4].sum()), 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(torch.cat(rows[:4]), first, rtol=0, atol=0)
    noise.clear()
    assert not noise._blocks
    for j in (9, 0, 5):  # drawn again in another order: identical
        torch.testing.assert_close(noise[j], rows[j], rtol=0, atol=0)
    assert sorted(noise._blocks) == [0, 1, 2]
    other = plan.SampleNoise(offsets, 8, seed=4)
    assert not torch.equal(other[5], rows[5])
    assert not torch.equal(rows[4][:1], rows[0][:1])  # block 1 is not a copy of block 0


def test_streamed_chunks_keep_only_their_noise_blocks(models, monkeypatch):
    """Chunks that straddle noise blocks give the samples of one whole run, and the blocks of finished
    chunks are let go."""
    import adit_torch.sample as sample_mod
    import adit_torch.sample_plan as plan

    monkeypatch.setattr(plan, "NOISE_BLOCK", 4)
    drawn_blocks = []
    original = plan.SampleNoise._block

    def spy(self, b):
        drawn_blocks.append((b, len(self._blocks)))
        return original(self, b)

    monkeypatch.setattr(plan.SampleNoise, "_block", spy)
    dit, vae = models
    whole = sample_systems(dit, vae, FlowConfig(steps=2), STATS, "crystal", 11, progress=False, seed=5)
    drawn_blocks.clear()
    parts = list(sample_mod.iter_systems(dit, vae, FlowConfig(steps=2), STATS, "crystal", 11, progress=False,
                                         seed=5, chunk=3))
    assert [len(p) for p in parts] == [3, 3, 3, 2]
    assert max(held for _, held in drawn_blocks) <= 2  # a chunk of 3 touches at most two blocks of 4
    for a, b in zip(whole, [s for p in parts for s in p]):
        assert a.info["id"] == b.info["id"] and np.array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-4)


def test_the_gpu_cost_model_pads_into_fewer_groups_than_the_cpu_one():
    """On CUDA a forward costs about the same whatever its size, so 1,000 mixed sizes go in few groups."""
    from adit_torch.config import dit_config
    from adit_torch.sample_plan import GPU_FLOP_PER_S, GPU_FORWARD_FIXED_S, forward_cost

    dit = DiT(dit_config("S", latent_dim=8))
    params = sum(p.numel() for p in dit.parameters())
    assert forward_cost(dit, "cuda", "bf16") == (GPU_FORWARD_FIXED_S, 2.0 * params / GPU_FLOP_PER_S["bf16"])
    fixed_cpu, token_cpu = forward_cost(dit, "cpu")
    assert token_cpu > forward_cost(DiT(dit_config("XS", latent_dim=8)), "cpu")[1]  # bigger model, dearer slot
    counts = np.random.default_rng(0).integers(1, 21, size=1000)
    cpu = padded_groups(counts, 1000, fixed_cpu, 2 * token_cpu)
    gpu = padded_groups(counts, 1000, *[c * f for c, f in zip(forward_cost(dit, "cuda", "bf16"), (1, 2))])
    assert len(gpu) == 1 and len(cpu) >= 10
    assert sorted(np.concatenate(cpu).tolist()) == sorted(np.concatenate(gpu).tolist()) == list(range(1000))


def test_guidance_interval_samples_and_summary(models):
    """A guidance interval changes the samples only where it leaves guidance out, the summary counts the forwards
    actually spent, and a bad interval is refused before any sampling."""
    from adit_torch.flow import evaluation_schedule, time_grid
    from adit_torch.sample import check_guidance_interval, forward_passes

    dit, vae = models
    flow = FlowConfig(steps=4)
    full = sample_systems(dit, vae, flow, STATS, "crystal", 4, progress=False, seed=2)
    everywhere = sample_systems(dit, vae, flow, STATS, "crystal", 4, progress=False, seed=2,
                                guidance_interval=(0.0, 1.0))
    early = sample_systems(dit, vae, flow, STATS, "crystal", 4, progress=False, seed=2, guidance_interval=(0.0, 0.3))
    for a, b in zip(full, everywhere):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-5)
    assert max(float(np.abs(a.frac_coords - b.frac_coords).max()) for a, b in zip(full, early)) > 1e-4
    schedule = evaluation_schedule(time_grid(10), "heun")
    assert forward_passes(schedule, 2) == 38 and forward_passes(schedule, 2, (0.0, 0.5)) == 2 * 11 + 8
    for bad in ((0.5, 0.2), (0.0, 1.5), ("a", 1), (0.1,)):
        with pytest.raises(ConfigError, match="guidance_interval"):
            check_guidance_interval(bad)
    with pytest.raises(ConfigError, match="guidance_interval"):
        sample_systems(dit, vae, flow, STATS, "crystal", 2, progress=False, guidance_interval=(0.9, 0.1))
    path = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints" / "tiny_dit.safetensors"
    _, summary = sample_checkpoint(path, "crystal", 3, steps=10, solver="heun", progress=False,
                                   guidance_interval=(0.0, 0.5))
    assert summary["nfe"] == 19 and summary["forward_passes_per_sample"] == 30
    assert summary["settings"]["guidance_interval"] == [0.0, 0.5]
