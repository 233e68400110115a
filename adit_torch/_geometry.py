"""Small numerical helpers shared by the representation and the evaluation."""

from __future__ import annotations

import itertools

import numpy as np

_SHIFTS = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)


def lll_reduce(lattice: np.ndarray, delta: float = 0.75) -> np.ndarray:
    """LLL-reduced basis ``(3, 3)`` (rows, Å) of the same lattice: short, nearly orthogonal vectors.

    The result spans the same lattice (an integer unimodular change of basis).
    Singular input is returned unchanged.
    """
    b = np.array(lattice, dtype=np.float64).reshape(3, 3)
    if abs(np.linalg.det(b)) < 1e-9:
        return b

    def gram_schmidt(basis):
        star = np.zeros_like(basis)
        mu = np.zeros((3, 3))
        for i in range(3):
            star[i] = basis[i]
            for j in range(i):
                mu[i, j] = basis[i] @ star[j] / (star[j] @ star[j])
                star[i] = star[i] - mu[i, j] * star[j]
        return star, mu

    k = 1
    for _ in range(1000):  # LLL terminates quickly in 3D; the cap only guards against float trouble
        if k >= 3:
            break
        for j in range(k - 1, -1, -1):
            _, mu = gram_schmidt(b)
            q = np.round(mu[k, j])
            if q:
                b[k] = b[k] - q * b[j]
        star, mu = gram_schmidt(b)
        if star[k] @ star[k] >= (delta - mu[k, k - 1] ** 2) * (star[k - 1] @ star[k - 1]):
            k += 1
        else:
            b[[k - 1, k]] = b[[k, k - 1]]
            k = max(k - 1, 1)
    return b


def periodic_distance_matrix(frac: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Minimum-image distances ``(N, N)`` in Å for fractional coords ``(N, 3)`` and lattice ``(3, 3)``.

    The cell is first LLL-reduced (same lattice, short basis), then the 27
    neighbouring images of each difference wrapped to ``[-0.5, 0.5)`` are
    searched; so even a very skewed description of a crystal gets its true
    nearest images. The diagonal holds the length of the shortest non-zero
    lattice translation.
    """
    frac = np.asarray(frac, dtype=np.float64).reshape(-1, 3)
    lattice = np.asarray(lattice, dtype=np.float64).reshape(3, 3)
    if abs(np.linalg.det(lattice)) >= 1e-9:
        reduced = lll_reduce(lattice)
        frac = np.linalg.solve(reduced.T, (frac @ lattice).T).T
        lattice = reduced
    diff = frac[:, None, :] - frac[None, :, :]
    diff -= np.round(diff)
    cart = (diff[:, :, None, :] + _SHIFTS[None, None]) @ lattice  # (N, N, 27, 3)
    dist = np.linalg.norm(cart, axis=-1)
    n = len(frac)
    zero = np.all(_SHIFTS == 0, axis=1)
    dist[np.arange(n), np.arange(n), np.flatnonzero(zero)[0]] = np.inf
    return dist.min(axis=-1)


def kabsch_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The proper rotation ``(3, 3)`` that best maps centred ``b (k, 3)`` onto centred ``a`` (``b @ R ~ a``)."""
    if len(a) == 1:
        return np.eye(3)
    u, _, vt = np.linalg.svd(b.T @ a)
    return u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD (Å) of ``b (k, 3)`` onto ``a (k, 3)`` after centring both and the best proper rotation (Kabsch)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    return float(np.sqrt(((b @ kabsch_rotation(a, b) - a) ** 2).sum(1).mean()))
