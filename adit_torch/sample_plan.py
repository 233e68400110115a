"""What a sampling run draws before it integrates, and how it batches: every sample's atom count, its
initial noise, and the padded groups of samples that go through the DiT together.

Atom counts come from the training histogram stored in the checkpoint (per kind, or per space
group) or from the user, drawn up front in sample order from the seed. Samples are sorted by atom
count and cut into padded batches chosen by a cost model of one forward (a fixed cost per call plus
a cost per token slot, :func:`padded_groups`): small atom-count groups are merged when the padding
is cheaper than another call. Each sample's initial noise depends on the seed, its index and the
atom counts only, not on how samples are grouped into batches or chunks (:class:`SampleNoise`), and
it is drawn a block at a time, so memory does not grow with the number of samples.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from adit_torch.dit import CRYSTAL, MOLECULE
from adit_torch.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

KINDS = {"crystal": CRYSTAL, "molecule": MOLECULE}
#: Cost model of one DiT forward at sampling (measured on a 2-core CPU, XS model, one thread, with the
#: conditioning precomputed): fixed seconds per call and seconds per token slot (a guided sample slot
#: counts twice: conditional and null pass). The token cost grows with the model's parameters.
FORWARD_FIXED_S = 5e-3
FORWARD_TOKEN_S = 110e-6
XS_DIT_PARAMS = 2_831_624
#: The same on a CUDA GPU, from ``benchmarks/results/gpu_sampling_NVIDIA_H200.json`` (H200, 2026-12-04):
#: about 5 ms per call whatever the size (launch-bound: DiT-S and DiT-B took the same 8.1 s per 1,000
#: crystals in bf16), and ``2 * params`` FLOP per token slot at about 60 TFLOP/s in float32 (DiT-S
#: 8.5 s, DiT-B 14.1 s) and 400 TFLOP/s in bfloat16. Padding is nearly free there, so groups are few.
GPU_FORWARD_FIXED_S = 5e-3
GPU_FLOP_PER_S = {"fp32": 60e12, "bf16": 400e12}


def forward_cost(dit, device, precision: str = "fp32") -> tuple[float, float]:
    """Modelled seconds of one sampling forward of ``dit`` on ``device``: ``(per call, per token slot)``."""
    params = sum(p.numel() for p in dit.parameters())
    if torch.device(device).type == "cuda":
        return GPU_FORWARD_FIXED_S, 2.0 * params / GPU_FLOP_PER_S[precision]
    return FORWARD_FIXED_S, FORWARD_TOKEN_S * max(params, 1) / XS_DIT_PARAMS


def draw_num_atoms(hist: dict[str, int], n: int, generator: torch.Generator) -> np.ndarray:
    """``n`` atom counts ``(n,)`` drawn from a histogram ``{"N": count}``."""
    sizes = np.array([int(k) for k in hist], dtype=np.int64)
    probs = torch.tensor([float(v) for v in hist.values()], dtype=torch.float64)
    if len(sizes) == 0 or probs.sum() <= 0:
        raise ConfigError("the atom-count histogram is empty")
    idx = torch.multinomial(probs / probs.sum(), n, replacement=True, generator=generator).numpy()
    return sizes[idx]


def size_buckets(num_atoms: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index groups of equal atom count, each at most ``batch_size`` long (no padding)."""
    order = np.argsort(num_atoms, kind="stable")
    out = []
    for n in np.unique(num_atoms):
        idx = order[num_atoms[order] == n]
        out += [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    return out


def padded_groups(num_atoms: np.ndarray, batch_size: int, fixed_s: float = FORWARD_FIXED_S,
                  slot_s: float = 2 * FORWARD_TOKEN_S) -> list[np.ndarray]:
    """Index groups (each at most ``batch_size`` long) minimising the modelled cost of one step.

    Samples are sorted by atom count (stable); a group is a contiguous run of that order, padded to its
    largest count, and costs ``fixed_s + slot_s * len(group) * max_count`` seconds. An exact dynamic
    program over cut points picks the cheapest cover. ``fixed_s = 0`` gives groups of equal count.

    Args:
        num_atoms: ``(n,)`` atom counts.
        batch_size: most samples per group.
        fixed_s: seconds per forward call.
        slot_s: seconds per padded token slot of one sample.

    Returns:
        Lists of sample indices, each sorted by atom count.
    """
    order = np.argsort(num_atoms, kind="stable")
    s = np.asarray(num_atoms)[order].astype(np.float64)
    n = len(s)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        i = np.arange(max(0, j - batch_size), j)
        cost = best[i] + fixed_s + slot_s * (j - i) * s[j - 1]
        k = int(np.argmin(cost))  # first minimum: deterministic
        best[j], cut[j] = cost[k], i[k]
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = int(cut[j])
    return groups[::-1]


#: Samples per block of initial noise (:class:`SampleNoise`).
NOISE_BLOCK = 1000


class SampleNoise:
    """The initial noise of every sample, drawn a block of :data:`NOISE_BLOCK` samples at a time when asked.

    Block ``b`` holds samples ``b * NOISE_BLOCK ..`` and is drawn in sample order as one
    ``randn(atoms of the block, dim)`` from a generator seeded by ``seed`` for block 0 (so up to
    :data:`NOISE_BLOCK` samples get exactly the noise of one up-front draw) and by
    ``SeedSequence([seed, b])`` for the others. A sample's noise thus depends on the seed, its index
    and the atom counts only, and memory holds the blocks in use, not ``num_samples`` of them:
    :meth:`clear` lets the drawn blocks go (a streamed run calls it after every chunk).

    Args:
        offsets: ``(M + 1,)`` cumulative atom counts (sample ``j`` has ``offsets[j + 1] - offsets[j]`` atoms).
        dim: latent width. seed: the sampling seed. device: where the noise is drawn.
    """

    def __init__(self, offsets: np.ndarray, dim: int, seed: int = 0, device="cpu"):
        self.offsets, self.dim = np.asarray(offsets, dtype=np.int64), int(dim)
        self.seed, self.device = int(seed), device
        self._blocks: dict[int, torch.Tensor] = {}

    def _block(self, b: int) -> torch.Tensor:
        if b not in self._blocks:
            seed = self.seed if b == 0 else int(np.random.SeedSequence([self.seed, b]).generate_state(1, np.uint64)[0]
                                                >> np.uint64(1))
            generator = torch.Generator(device=self.device).manual_seed(seed)
            lo, hi = b * NOISE_BLOCK, min((b + 1) * NOISE_BLOCK, len(self.offsets) - 1)
            atoms = int(self.offsets[hi] - self.offsets[lo])
            self._blocks[b] = torch.randn(atoms, self.dim, generator=generator, device=self.device)
        return self._blocks[b]

    def __getitem__(self, j: int) -> torch.Tensor:
        """Sample ``j``'s noise, ``(atoms of j, dim)``."""
        b = int(j) // NOISE_BLOCK
        base = self.offsets[b * NOISE_BLOCK]
        return self._block(b)[int(self.offsets[j] - base):int(self.offsets[j + 1] - base)]

    def clear(self) -> None:
        """Forget the drawn blocks (they are drawn again, identically, if asked for again)."""
        self._blocks.clear()


def draw_sizes_and_noise(stats: dict[str, Any], kind: str, num_samples: int, dim: int, seed: int = 0,
                         num_atoms: int | list[int] | None = None, device="cpu", min_atoms: int = 0,
                         multiple_of: int = 0, space_group: int | None = None):
    """Every sample's atom count (drawn up front in sample order from ``seed``) and initial noise.

    Returns ``(counts (M,), offsets (M + 1,), noise)``: sample ``j``'s noise is ``noise[j]``
    ``(counts[j], dim)`` (:class:`SampleNoise`, drawn a block at a time when asked). Counts drawn
    from the histogram are drawn among the counts above ``min_atoms`` (an inpainting fragment's size)
    that are multiples of ``multiple_of`` (a formula unit's atoms; 0 = any). With ``space_group``
    (crystals), the histogram is that of the training crystals of the group
    (``stats["num_atoms_hist_by_space_group"]``) where the model records it and the filters leave a
    count; else the kind's histogram, with a warning.
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be 'crystal' or 'molecule', got {kind!r}")
    counts_gen = torch.Generator().manual_seed(int(seed))
    if num_atoms is None:
        hist = stats.get("num_atoms_hist", {}).get(kind)
        if space_group is not None and kind == "crystal":
            by_group = stats.get("num_atoms_hist_by_space_group", {}).get(str(int(space_group)), {})
            # the group's counts that survive the two filters below; else the kind's histogram goes through them
            by_group = {n: c for n, c in by_group.items() if int(n) > min_atoms} if min_atoms else by_group
            by_group = {n: c for n, c in by_group.items() if int(n) % multiple_of == 0} if multiple_of else by_group
            if by_group:
                hist = by_group
            else:
                logger.warning("space group %d: the model records no training crystal of it%s; atom counts "
                               "come from all crystals", space_group,
                               " that fits the other constraints" if (min_atoms or multiple_of) else "")
        if not hist:
            raise CheckpointError(f"this model was not trained on {kind}s (no {kind} atom-count histogram); "
                                  "pass --num-atoms or use a checkpoint trained on them")
        if min_atoms:
            hist = {n: c for n, c in hist.items() if int(n) > min_atoms}
            if not hist:
                raise ConfigError(f"no {kind} of the training data has more than {min_atoms} atoms; "
                                  "pass num_atoms")
        if multiple_of:
            hist = {n: c for n, c in hist.items() if int(n) % multiple_of == 0}
            if not hist:
                raise ConfigError(f"no {kind} of the training data has a multiple of the formula's "
                                  f"{multiple_of} atoms; pass num_atoms")
        counts = draw_num_atoms(hist, num_samples, counts_gen)
    else:
        counts = np.asarray([num_atoms] * num_samples if np.isscalar(num_atoms) else num_atoms, dtype=np.int64)
        if len(counts) != num_samples or (counts <= 0).any():
            raise ConfigError("num_atoms must be positive and give one count per sample")
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return counts, offsets, SampleNoise(offsets, dim, seed, device)
