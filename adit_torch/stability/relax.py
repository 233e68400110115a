"""Relaxation of crystals (positions and cell) with a machine-learned potential.

Each structure is relaxed with an ASE optimiser (FIRE by default) under a
cell filter (``FrechetCellFilter``) until the largest force (and the scaled
stress) falls under ``fmax`` or ``steps`` is reached. A relaxation that
exploded (NaN, volume changed by more than a factor, atoms closer than
0.5 Å) or failed (the potential cannot handle the structure) is flagged with
a reason and never silently kept; one that hit the step limit is kept but
flagged ``converged=False``. Batches go on past bad structures.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from adit_torch.errors import ConfigError, InvalidSystemError
from adit_torch.stability.potentials import Potential, get_potential
from adit_torch.system import MIN_DISTANCE, AtomicSystem

#: Outcome of a relaxation: kept (``converged``, ``unconverged``) or rejected (``exploded``, ``failed``).
STATUSES = ("converged", "unconverged", "exploded", "failed")
OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")


@dataclass
class RelaxResult:
    """One relaxed structure and its flags.

    Attributes:
        index: position of the structure in the input batch.
        id: ``info['id']`` of the input structure (or ``str(index)``).
        status: one of :data:`STATUSES`.
        reason: why a structure exploded or failed (empty otherwise).
        system: the relaxed crystal (``None`` when exploded or failed); its
            ``info`` carries ``total_energy`` (eV) and the flags.
        initial_energy / energy: total energies before and after, eV.
        max_force: largest final per-atom force norm, eV/Å.
        stress: final stress ``(3, 3)``, eV/Å^3.
        forces: final forces ``(N, 3)``, eV/Å.
        steps: optimiser steps taken.
        volume_ratio: final / initial cell volume.
        seconds: wall time of this relaxation.
    """

    index: int
    id: str
    status: str
    reason: str = ""
    system: AtomicSystem | None = None
    num_atoms: int = 0
    formula: str = ""
    initial_energy: float | None = None
    energy: float | None = None
    max_force: float | None = None
    stress: np.ndarray | None = None
    forces: np.ndarray | None = field(default=None, repr=False)
    steps: int = 0
    volume_ratio: float | None = None
    min_distance: float | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when a relaxed structure is kept (converged or hit the step limit)."""
        return self.status in ("converged", "unconverged")

    @property
    def converged(self) -> bool:
        """True when the force threshold was reached."""
        return self.status == "converged"

    @property
    def energy_per_atom(self) -> float | None:
        """Final energy per atom, eV/atom (``None`` when not kept)."""
        return None if self.energy is None or not self.num_atoms else self.energy / self.num_atoms

    def to_record(self) -> dict:
        """JSON-serialisable summary (no forces, no structure)."""
        return {
            "index": self.index, "id": self.id, "formula": self.formula, "num_atoms": self.num_atoms,
            "status": self.status, "converged": self.converged, "reason": self.reason,
            "initial_energy": self.initial_energy, "energy": self.energy, "energy_per_atom": self.energy_per_atom,
            "max_force": self.max_force, "steps": self.steps, "volume_ratio": self.volume_ratio,
            "min_distance": self.min_distance,
            "stress": None if self.stress is None else np.round(self.stress, 8).tolist(),
            "seconds": round(self.seconds, 3),
        }


def _optimizer(name: str):
    from ase import optimize

    key = name.upper()
    if key not in OPTIMIZERS:
        raise ConfigError(f"unknown optimiser {name!r}; choose one of {OPTIMIZERS}")
    return getattr(optimize, key)


def check_relaxed(initial: AtomicSystem, final: AtomicSystem, energy: float, max_volume_ratio: float = 3.0,
                  min_distance: float = MIN_DISTANCE) -> str:
    """Why a relaxed structure counts as exploded, or ``""`` when it is sound.

    Exploded: a non-finite energy, position or cell; a volume that grew or
    shrank by more than ``max_volume_ratio``; two atoms closer than
    ``min_distance`` Å.
    """
    if not math.isfinite(energy):
        return f"non-finite energy ({energy})"
    if not np.isfinite(final.positions).all() or not np.isfinite(final.lattice).all():
        return "non-finite positions or cell"
    ratio = final.volume / initial.volume
    if not (1.0 / max_volume_ratio <= ratio <= max_volume_ratio):
        return f"volume changed by a factor {ratio:.3g} (limit {max_volume_ratio})"
    dmin = final.min_distance()
    if dmin < min_distance:
        return f"atoms collapsed: closest pair {dmin:.3f} Å < {min_distance} Å"
    return ""


def relax_system(system: AtomicSystem, potential: Potential | None = None, *, fmax: float = 0.05,
                 steps: int = 500, optimizer: str = "FIRE", relax_cell: bool = True,
                 max_volume_ratio: float = 3.0, index: int = 0, calculator=None) -> RelaxResult:
    """Relax one crystal (positions, and the cell when ``relax_cell``) and flag the outcome.

    Args:
        system: a periodic :class:`AtomicSystem`.
        potential: the potential (CHGNet when ``None``).
        fmax: force threshold, eV/Å (applies to the filter's scaled stress too).
        steps: maximum optimiser steps.
        optimizer: ``"FIRE"``, ``"BFGS"`` or ``"LBFGS"``.
        relax_cell: relax the cell with ``FrechetCellFilter`` as well as positions.
        max_volume_ratio: volume change beyond this factor counts as exploded.
        index: position in the caller's batch, copied into the result.
        calculator: an ASE calculator to reuse (``potential.ase_calculator()`` when ``None``).

    Returns:
        A :class:`RelaxResult`; it never raises for a bad structure (status ``failed``).
    """
    if fmax <= 0 or steps < 0:
        raise ConfigError(f"fmax must be > 0 and steps >= 0 (got fmax={fmax}, steps={steps})")
    opt_cls = _optimizer(optimizer)
    potential = potential or get_potential("chgnet")
    label = str(system.info.get("id", index))
    result = RelaxResult(index=index, id=label, status="failed", num_atoms=system.num_atoms)
    t0 = time.perf_counter()
    try:
        result.formula = system.formula
        potential.check(system)
        atoms = system.to_ase()
        atoms.calc = calculator or potential.ase_calculator()
        result.initial_energy = float(atoms.get_potential_energy())
        target = atoms
        if relax_cell:
            from ase.filters import FrechetCellFilter

            target = FrechetCellFilter(atoms)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = opt_cls(target, logfile=None)
            reached = bool(opt.run(fmax=fmax, steps=steps))
        result.steps = int(opt.nsteps)
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces(), dtype=np.float64)
        stress = np.asarray(atoms.get_stress(voigt=False), dtype=np.float64)
    except InvalidSystemError as exc:
        result.reason = str(exc)
        result.seconds = time.perf_counter() - t0
        return result
    except (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError) as exc:
        # the potential or the optimiser gave up on this structure (isolated atoms, a singular cell...)
        result.reason = f"{label}: relaxation failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        result.seconds = time.perf_counter() - t0
        return result
    info = {k: v for k, v in system.info.items() if isinstance(v, (str, int, float, bool))}
    final = AtomicSystem(atoms.numbers, atoms.positions, np.asarray(atoms.cell[:]), info)
    result.seconds = time.perf_counter() - t0
    reason = check_relaxed(system, final, energy, max_volume_ratio=max_volume_ratio)
    if reason:
        result.status, result.reason = "exploded", f"{label}: {reason}"
        return result
    result.status = "converged" if reached else "unconverged"
    if not reached:
        result.reason = f"{label}: not converged in {steps} steps"
    result.energy = energy
    result.forces = forces
    result.stress = stress
    result.max_force = float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0
    result.volume_ratio = float(final.volume / system.volume)
    result.min_distance = float(final.min_distance())
    final.info.update({
        # not "energy": ASE's extxyz reader turns that key into a calculator result and drops it from info
        "total_energy": energy, "energy_per_atom": energy / final.num_atoms, "max_force": result.max_force,
        "converged": reached, "relax_status": result.status, "relax_steps": result.steps,
        "relaxed_from": label, "potential": potential.name,
    })
    result.system = final
    return result


def relax_systems(systems: Sequence[AtomicSystem], potential: Potential | None = None, *, fmax: float = 0.05,
                  steps: int = 500, optimizer: str = "FIRE", relax_cell: bool = True,
                  max_volume_ratio: float = 3.0, progress: bool = True) -> list[RelaxResult]:
    """Relax a batch of crystals one by one with a shared calculator; one result per input, in order.

    Structures the potential cannot handle come back with status ``failed``
    and a reason; the batch goes on. See :func:`relax_system` for the arguments.
    """
    potential = potential or get_potential("chgnet")
    calculator = potential.ase_calculator()
    results = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(systems), desc=f"relax ({potential.name})", unit="struct", file=sys.stderr)
    for i, system in enumerate(systems):
        results.append(relax_system(system, potential, fmax=fmax, steps=steps, optimizer=optimizer,
                                    relax_cell=relax_cell, max_volume_ratio=max_volume_ratio, index=i,
                                    calculator=calculator))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=sum(not r.ok for r in results))
    if bar is not None:
        bar.close()
    return results


def summarize(results: Sequence[RelaxResult]) -> dict:
    """Counts per status and the mean steps / seconds of kept relaxations."""
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    kept = [r for r in results if r.ok]
    return {
        "num_structures": len(results), **counts,
        "mean_steps": float(np.mean([r.steps for r in kept])) if kept else None,
        "total_seconds": float(sum(r.seconds for r in results)),
    }
