"""Symmetry-aware decoding: snap a generated crystal onto an asked space group.

A crystal sampled with ``--condition space_group=N`` comes out of the decoder close to the
group's lattice and near-symmetric, but its atoms are off by a few tenths of an Å, so spglib at
the evaluator's 0.1 Å finds P1. :func:`symmetrize` projects the crystal onto the nearest
structure that has group ``N`` exactly, and refuses when that structure is far away:

1. **Lattice.** spglib on the lattice alone (one point per cell) at increasing tolerances
   (:data:`LATTICE_TOLERANCES`) finds the conventional cell of the Bravais lattice. Cells whose
   Bravais lattice (crystal family and centring) is the group's are used, and so are those of a
   higher family with the same centring that holds the group's cell (a metrically tetragonal
   lattice for an orthorhombic group).
2. **Setting and origin.** Every setting (Hall symbol) of group ``N`` with that centring is
   tried. For each, origins are proposed where one operation of the setting (of highest rank of
   ``I - R``: an inversion pins the origin down) maps an atom of the rarest element onto another,
   or where that atom sits on a special point, and scored on a few of the group's operations.
3. **Projection.** For the best few (setting, origin), each operation's atom permutation is the
   optimal same-element assignment, and each atom moves to the average of its pulled-back
   images (the group average, the orthogonal projection onto the symmetric configurations; two
   passes). The metric tensor is averaged over the point group the same way, which makes the
   lattice exactly the group's.
4. **Check.** The result is kept only when spglib finds group ``N`` at 0.01 Å, no atom moved
   more than ``max_shift`` Å, no cell length changed by more than ``max_strain``, and no two
   atoms are closer than :data:`adit_torch.system.MIN_DISTANCE`.

Before decoding's types are final, :func:`compatible_types` gives each element a count the
group's sites can hold (:func:`site_multiplicities`), so that a symmetric arrangement exists.

The crystal keeps its cell choice, its atom count and its atom order; only positions and
lattice change. A cell that is a supercell of the group's cell (two Pnnm cells stacked) is
refused: the setting's operations are not its operations. What moved is returned
(:class:`SymmetrizeResult`), so the benchmark can report the displacement next to the hit rate
(``benchmarks/conditioning.py``).
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import numpy as np

from adit_torch.errors import ConfigError
from adit_torch.system import MIN_DISTANCE, AtomicSystem

#: spglib tolerances (Å) tried on the lattice alone, loosest last.
LATTICE_TOLERANCES = (0.001, 0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
#: Lattice families whose conventional cell (same centring) is also one of a lower family's
#: (a tetragonal P cell is an orthorhombic P cell with a = b), so a metrically higher lattice can host the group.
_HOSTS = {"c": {"t", "o", "m"}, "t": {"o", "m"}, "o": {"m"}, "h": {"m"}}
#: Default largest displacement of one atom (Å) a snap may make.
MAX_SHIFT = 1.0
#: Default largest relative change of a cell length a snap may make.
MAX_STRAIN = 0.15
#: spglib tolerance (Å) at which a snapped crystal must show the asked group.
CHECK_SYMPREC = 0.01
#: Special coordinates an atom of the rarest element is tried at (fractions of the cell).
_SPECIAL = (0.0, 0.25, 1 / 3, 0.5, 2 / 3, 0.75)
#: Operations used to score an origin before the full projection, and origins projected.
_SCREEN_OPS, _FULL_CANDIDATES = 8, 4


@dataclass
class SymmetrizeResult:
    """Outcome of :func:`symmetrize` for one crystal.

    Attributes:
        system: the snapped crystal (same cell choice, atom count and order), or the input when
            ``ok`` is False.
        ok: whether the snap was kept.
        reason: why not, in words ('' when ok).
        max_shift: largest atom displacement (Å) of the snap (nan when none was computed).
        rms_shift: root-mean-square atom displacement (Å).
        strain: largest relative change of a cell length.
        lattice_tolerance: the spglib tolerance (Å) at which the lattice showed the group's Bravais lattice.
        hall_number: spglib's Hall number of the setting used.
    """

    system: AtomicSystem
    ok: bool
    reason: str = ""
    max_shift: float = float("nan")
    rms_shift: float = float("nan")
    strain: float = float("nan")
    lattice_tolerance: float = float("nan")
    hall_number: int = 0


def _spglib():
    import spglib

    return spglib


def quiet_spglib(fn, *args, **kwargs):
    """Call spglib function ``fn`` with its notices off (Python warnings, and the C library's lines on
    stderr such as 'No centring was found', which loose tolerances and distorted cells trigger);
    its result, or None when it raises (spglib raises on degenerate cells)."""
    before = os.environ.get("SPGLIB_WARNING")
    os.environ["SPGLIB_WARNING"] = "OFF"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    except Exception:  # spglib raises its own error class on degenerate cells
        return None
    finally:
        if before is None:
            os.environ.pop("SPGLIB_WARNING", None)
        else:
            os.environ["SPGLIB_WARNING"] = before


def _family(number: int) -> str:
    """Crystal family of space group ``number`` (hexagonal and trigonal share one)."""
    for top, name in ((2, "a"), (15, "m"), (74, "o"), (142, "t"), (194, "h"), (230, "c")):
        if number <= top:
            return name
    raise ConfigError(f"space group {number}: not in 1..230")


def _letter(hall_symbol: str) -> str:
    """Centring letter of a Hall symbol (``-F 4 2 3`` -> ``F``)."""
    return hall_symbol.lstrip("-")[0]


@functools.cache
def settings(number: int) -> tuple[tuple[int, str], ...]:
    """The Hall settings of space group ``number`` as ``(hall_number, centring letter)`` pairs."""
    spglib = _spglib()
    out = []
    for hall in range(1, 531):
        kind = quiet_spglib(spglib.get_spacegroup_type, hall)
        if kind is not None and kind.number == number:
            out.append((hall, _letter(kind.hall_symbol)))
    return tuple(out)


@functools.cache
def _operations(hall: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotations ``(K, 3, 3)`` (integers, fractional) and translations ``(K, 3)`` of Hall setting ``hall``."""
    ops = _spglib().get_symmetry_from_database(hall)
    return np.asarray(ops["rotations"], dtype=float), np.asarray(ops["translations"], dtype=float)


def _wrap(d: np.ndarray) -> np.ndarray:
    return d - np.round(d)


def _conventional_lattice(system: AtomicSystem, number: int):
    """Yield ``(tolerance, P, p, centring)`` for each lattice tolerance whose Bravais lattice is the group's,
    or a higher one whose cell holds the group's (:data:`_HOSTS`), tightest first, up to the first exact one.

    ``P`` (3, 3) and ``p`` (3,) take fractional coordinates of ``system`` to the conventional
    cell: ``x_s = P x + p`` (spglib's convention; conventional rows ``A = P^-T L``).
    """
    spglib = _spglib()
    family = _family(number)
    if family == "a":  # any cell is a triclinic group's conventional cell
        yield 0.0, np.eye(3), np.zeros(3), "P"
        return
    letters = {letter for _, letter in settings(number)}
    seen = []
    for tol in LATTICE_TOLERANCES:
        data = quiet_spglib(spglib.get_symmetry_dataset, (system.lattice, [[0.0, 0.0, 0.0]], [1]), symprec=tol)
        if data is None:
            continue
        found = _family(int(data.number))
        if found != family and family not in _HOSTS.get(found, ()):
            continue
        kind = quiet_spglib(spglib.get_spacegroup_type, int(data.hall_number))
        letter = _letter(kind.hall_symbol) if kind is not None else "?"
        P = np.asarray(data.transformation_matrix, dtype=float)
        if letter not in letters or any(np.allclose(P, q) for q in seen):
            continue
        seen.append(P)
        yield tol, P, np.asarray(data.origin_shift, dtype=float), letter
        if found == family:  # looser tolerances would only find the same lattice, or a higher one
            return


def _to_conventional(frac: np.ndarray, P: np.ndarray, p: np.ndarray):
    """Atoms of the conventional cell: fractional ``(M, 3)`` and the index of the input atom of each."""
    det = abs(np.linalg.det(P))
    copies = int(round(1.0 / det))
    reach = int(np.ceil(np.abs(np.linalg.inv(P)).sum(axis=1).max())) + 1
    grid = np.array(np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij")).reshape(3, -1).T
    images = (frac[:, None, :] + grid[None]) @ P.T + p  # (N, G, 3)
    inside = np.all((images > -1e-6) & (images < 1 - 1e-6), axis=2)
    coords, owner = [], []
    for i in range(len(frac)):
        pts = images[i][inside[i]]
        kept: list[np.ndarray] = []
        for q in pts:
            if not any(np.abs(_wrap(q - k)).max() < 1e-4 for k in kept):
                kept.append(q)
        coords.extend(kept)
        owner.extend([i] * len(kept))
    coords, owner = np.asarray(coords), np.asarray(owner)
    if len(coords) != copies * len(frac):
        return None, None
    return np.mod(coords, 1.0), owner


def _origins(y: np.ndarray, numbers: np.ndarray, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Candidate origins ``(M, 3)`` (fractional) of a setting's operations ``rot``, ``trans`` for atoms ``y``.

    If the structure has the group with origin ``o``, an operation ``(R, t)`` maps the reference atom
    (the first of the rarest element) onto some atom ``b`` of its element, so
    ``(I - R) o = y_b - R y_ref - t + n`` for an integer ``n``: solved for the operation of highest
    rank of ``I - R`` (an inversion or roto-inversion pins ``o`` down; a rotation leaves its axis,
    sampled in twelfths), for every ``b`` and ``n``. The rarest-element atom put on special points
    is added for the groups whose origin that pins better.
    """
    elements, counts = np.unique(numbers, return_counts=True)
    rare = y[numbers == elements[np.argmin(counts)]]
    ref = rare[0]
    special = np.array(np.meshgrid(*[_SPECIAL] * 3, indexing="ij")).reshape(3, -1).T
    out = [ref - special]
    eye = np.eye(3)
    ranks = [np.linalg.matrix_rank(eye - r) for r in rot]
    k = int(np.argmax(ranks))
    if ranks[k]:
        M = eye - rot[k]
        shifts = np.array(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij")).reshape(3, -1).T
        d = rare - ref @ rot[k].T - trans[k]
        solved = ((d[:, None, :] + shifts[None]) @ np.linalg.pinv(M).T).reshape(-1, 3)
        if ranks[k] < 3:  # free along the kernel of I - R: sample it
            _, _, vt = np.linalg.svd(M)
            kernel = vt[ranks[k]:]
            steps = np.array(np.meshgrid(*[np.arange(12) / 12.0] * len(kernel), indexing="ij")).reshape(
                len(kernel), -1).T
            solved = (solved[:, None, :] + (steps @ kernel)[None]).reshape(-1, 3)
        out.append(solved)
    cand = np.mod(np.concatenate(out), 1.0)
    _, first = np.unique(np.round(cand * 1e4).astype(np.int64) % 10000, axis=0, return_index=True)
    return cand[np.sort(first)]


def _screen(y, numbers, A, rot, trans, origins) -> np.ndarray:
    """Largest nearest-same-element distance (Å) of the images under a few operations, per origin ``(M,)``."""
    pick = np.linspace(0, len(rot) - 1, min(_SCREEN_OPS, len(rot))).round().astype(int)
    R, t = rot[pick], trans[pick]
    same = numbers[:, None] == numbers[None, :]
    worst = np.empty(len(origins))
    for m, o in enumerate(origins):
        u = y - o
        z = np.einsum("kij,aj->kai", R, u) + t[:, None, :]  # (K, N, 3)
        d = _wrap(z[:, :, None, :] - u[None, None, :, :]) @ A  # (K, N, N, 3)
        dist = np.linalg.norm(d, axis=-1)
        dist[:, ~same] = np.inf
        worst[m] = dist.min(axis=2).max()
    return worst


def _project(u, numbers, A, rot, trans, passes: int = 2):
    """Group average of origin-shifted coordinates ``u`` ``(N, 3)`` (fractional), ``passes`` times; each
    operation's permutation is the optimal same-element assignment of the images to the atoms."""
    from scipy.optimize import linear_sum_assignment

    inv = np.linalg.inv(rot)
    for _ in range(passes):
        acc = np.zeros_like(u)
        for k in range(len(rot)):
            z = u @ rot[k].T + trans[k]
            pulled = np.empty_like(u)
            for element in np.unique(numbers):
                idx = np.flatnonzero(numbers == element)
                d = _wrap(z[idx][:, None, :] - u[idx][None, :, :]) @ A
                rows, cols = linear_sum_assignment(np.linalg.norm(d, axis=-1))
                target = u[idx[cols]] + np.round(z[idx[rows]] - u[idx[cols]])  # image of atom idx[rows]
                pulled[idx[rows]] = (target - trans[k]) @ inv[k].T
            acc += pulled
        u = acc / len(rot)
    return u


def _metric_lattice(A: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Conventional lattice rows ``(3, 3)`` with the metric averaged over the point group, orientation kept."""
    M = A @ A.T
    Ms = np.mean([r.T @ M @ r for r in rot], axis=0)  # invariant metric: R^T M R = M for every R
    # closest lattice with metric Ms to A: A' = Ms^(1/2) (A A^T)^(-1/2) A keeps A's orientation
    def sqrtm(m):
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 1e-12, None))) @ v.T

    return sqrtm(Ms) @ np.linalg.inv(sqrtm(M)) @ A


def symmetrize(system: AtomicSystem, number: int, max_shift: float = MAX_SHIFT,
               max_strain: float = MAX_STRAIN) -> SymmetrizeResult:
    """Snap crystal ``system`` onto space group ``number`` (1..230), or say why not.

    Args:
        system: a crystal (lattice in Å, rows the vectors).
        number: international space-group number.
        max_shift: largest displacement of one atom (Å) the snap may make.
        max_strain: largest relative change of a cell length the snap may make.

    Returns:
        :class:`SymmetrizeResult`; its ``system`` has group ``number`` at spglib 0.01 Å when ``ok``.
    """
    if not system.is_periodic:
        raise ConfigError("symmetrize: a space group needs a crystal (a lattice), not a molecule")
    if not 1 <= int(number) <= 230:
        raise ConfigError(f"symmetrize: space group {number} is not in 1..230")
    number = int(number)
    lattice = np.asarray(system.lattice, dtype=float)
    if not np.isfinite(lattice).all() or abs(np.linalg.det(lattice)) < 1e-6 or not np.isfinite(system.positions).all():
        return SymmetrizeResult(system, False, "the lattice or the positions are degenerate "
                                               "(not finite, or zero volume)")
    best: tuple | None = None
    reason = f"the lattice is not {_family_name(number)} at up to {LATTICE_TOLERANCES[-1]} Å"
    numbers_in = np.asarray(system.numbers)
    for tol, P, p, letter in _conventional_lattice(system, number):
        y0, owner = _to_conventional(np.mod(system.frac_coords, 1.0), P, p)
        if y0 is None:
            reason = "the conventional cell could not be built"
            continue
        numbers = numbers_in[owner]
        A0 = np.linalg.inv(P).T @ system.lattice
        reason = f"no setting of group {number} puts the atoms within {max_shift} Å"
        for hall, hall_letter in settings(number):
            if hall_letter != letter:
                continue
            rot, trans = _operations(hall)
            A = _metric_lattice(A0, rot)
            strain = float(np.abs(np.linalg.norm(A, axis=1) / np.linalg.norm(A0, axis=1) - 1).max())
            if strain > max_strain:
                continue
            origins = _origins(y0, numbers, rot, trans)
            scores = _screen(y0, numbers, A, rot, trans, origins)
            for m in np.argsort(scores)[:_FULL_CANDIDATES]:
                if scores[m] > 2 * max_shift:
                    break
                u = _project(y0 - origins[m], numbers, A, rot, trans)
                y = u + origins[m]
                shift = np.linalg.norm(_wrap(y - y0) @ A, axis=1)
                if shift.max() > max_shift or (best is not None and shift.max() >= best[0]):
                    continue
                best = (float(shift.max()), float(np.sqrt((shift ** 2).mean())), strain, tol, hall, y, owner, P, p, A)
    if best is None:
        return SymmetrizeResult(system, False, reason)
    max_s, rms_s, strain, tol, hall, y, owner, P, p, A = best
    first = np.array([np.flatnonzero(owner == i)[0] for i in range(system.num_atoms)])
    frac = (y[first] - p) @ np.linalg.inv(P).T
    frac = frac + np.round(system.frac_coords - frac)  # each atom keeps its periodic image
    lattice = P.T @ A
    out = AtomicSystem.from_fractional(system.numbers, frac, lattice, info=dict(system.info))
    found = quiet_spglib(_spglib().get_symmetry_dataset, (out.lattice, np.mod(out.frac_coords, 1.0), out.numbers),
                   symprec=CHECK_SYMPREC)
    result = dict(max_shift=max_s, rms_shift=rms_s, strain=strain, lattice_tolerance=tol, hall_number=hall)
    if found is None or int(found.number) != number:
        got = "none" if found is None else int(found.number)
        return SymmetrizeResult(system, False, f"the projection has group {got}, not {number}", **result)
    if out.min_distance() < MIN_DISTANCE:
        return SymmetrizeResult(system, False, f"the projection puts two atoms closer than {MIN_DISTANCE} Å",
                                **result)
    out.info["symmetrized"] = number
    out.info["symmetrize_max_shift"] = round(max_s, 4)
    return SymmetrizeResult(out, True, "", **result)


def _family_name(number: int) -> str:
    return {"a": "triclinic", "m": "monoclinic", "o": "orthorhombic", "t": "tetragonal", "h": "hexagonal",
            "c": "cubic"}[_family(number)]


@functools.cache
def site_multiplicities(number: int) -> tuple[int, ...]:
    """Multiplicities of the Wyckoff positions of space group ``number`` in its primitive cell, ascending.

    Orbit sizes, under the group's operations, of the points of a 1/24 grid of the conventional
    cell (every special coordinate of the tables, 0, 1/8, 1/6, 1/4, 1/3, ..., lies on it), divided
    by the number of centring translations: Fm-3m gives (1, 2, 6, 8, 12, 24, 48) (its 4a ... 192l
    over 4 lattice points), Pnma (4, 8), P6_3/mmc (2, 4, 6, 12, 24).
    """
    if not 1 <= int(number) <= 230:
        raise ConfigError(f"space group {number} is not in 1..230")
    rot, trans = _operations(settings(int(number))[0][0])
    centring = int(sum(np.allclose(r, np.eye(3)) for r in rot))
    axis = np.arange(24) / 24.0
    grid = np.array(np.meshgrid(axis, axis, axis, indexing="ij")).reshape(3, -1).T  # (13824, 3)
    images = np.mod(np.einsum("kij,pj->pki", rot, grid) + trans[None], 1.0)  # (P, K, 3)
    keys = np.round(images * 24).astype(np.int64) % 24
    codes = (keys[..., 0] * 24 + keys[..., 1]) * 24 + keys[..., 2]  # (P, K)
    codes.sort(axis=1)
    distinct = 1 + (np.diff(codes, axis=1) != 0).sum(axis=1)
    return tuple(sorted({int(d) // centring for d in np.unique(distinct)}))


def _representable(limit: int, parts: tuple[int, ...]) -> np.ndarray:
    """``ok (limit + 1,)`` bool: whether each count 0..limit is a sum of ``parts`` (with repetition)."""
    ok = np.zeros(limit + 1, dtype=bool)
    ok[0] = True
    for value in range(1, limit + 1):
        ok[value] = any(p <= value and ok[value - p] for p in parts)
    return ok


def compatible_types(logits, number: int, elements: tuple[int, ...] | None = None,
                     max_compositions: int = 4000) -> np.ndarray:
    """Atom types of one crystal whose element counts space group ``number`` can hold.

    Each element's count must be a sum of the group's site multiplicities
    (:func:`site_multiplicities`: Pnma puts atoms 4 or 8 at a time), or no arrangement of the
    group exists. The most probable types are kept when their counts fit; otherwise, among the
    counts over the same elements that fit and add up to ``n``, the assignment of most summed
    log-probability (a linear assignment for each) is taken. When no counts fit, the most
    probable types are returned unchanged (the snap then refuses the crystal).

    Args:
        logits: ``(n, Z_max)`` type logits over atomic numbers 1..Z_max.
        number: international space-group number.
        elements: allowed atomic numbers (a chemical-system condition), or None.
        max_compositions: most count vectors tried.

    Returns:
        ``(n,)`` atomic numbers.
    """
    from adit_torch.conditions import assign_counts, assign_types

    base = assign_types(logits, elements)
    n = len(base)
    ok = _representable(n, site_multiplicities(number))
    present, counts = np.unique(base, return_counts=True)
    if ok[counts].all() or not ok[n]:
        return base
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
    choices = [v for v in range(n + 1) if ok[v]]
    best, best_score, tried = base, -np.inf, 0

    def search(prefix: list[int], left: int):
        nonlocal best, best_score, tried
        if tried >= max_compositions:
            return
        if len(prefix) == len(present) - 1:
            if not ok[left]:
                return
            tried += 1
            types, score = assign_counts(logp, dict(zip(present.tolist(), prefix + [left])))
            if score > best_score:
                best, best_score = types, score
            return
        for value in choices:
            if value > left:
                break
            search(prefix + [value], left - value)

    search([], n)
    return best
