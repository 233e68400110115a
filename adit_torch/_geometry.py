"""Small numerical helpers shared by the representation and the evaluation."""

from __future__ import annotations

import itertools

import numpy as np


def periodic_distance_matrix(frac: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Minimum-image distances ``(N, N)`` in Å for fractional coords ``(N, 3)`` and lattice ``(3, 3)``.

    Searches the 27 neighbouring cell images after wrapping the differences to
    ``[-0.5, 0.5)``; exact for reasonably shaped (e.g. Niggli-reduced) cells.
    The diagonal holds the length of the shortest non-zero lattice translation.
    """
    frac = np.asarray(frac, dtype=np.float64)
    diff = frac[:, None, :] - frac[None, :, :]
    diff -= np.round(diff)
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)
    cart = (diff[:, :, None, :] + shifts[None, None]) @ lattice  # (N, N, 27, 3)
    dist = np.linalg.norm(cart, axis=-1)
    n = len(frac)
    zero = np.all(shifts == 0, axis=1)
    dist[np.arange(n), np.arange(n), np.flatnonzero(zero)[0]] = np.inf
    return dist.min(axis=-1)
