"""Machine-learned interatomic potentials behind one small interface.

A :class:`Potential` predicts total energies (eV), forces (eV/Å) and stress
(eV/Å^3) for a batch of crystals and hands out an ASE calculator for
relaxations. CHGNet (weights shipped inside the installed ``chgnet`` wheel, so
it works offline) is the default; another potential plugs in by subclassing
:class:`Potential` and registering a factory in :data:`POTENTIALS`.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from adit_torch.errors import ConfigError, InvalidSystemError
from adit_torch.system import MIN_DISTANCE, SYMBOLS, AtomicSystem

#: GPa expressed in eV/Å^3 (1 eV/Å^3 = 160.2177 GPa).
GPA_IN_EV_PER_A3 = 1.0 / 160.21766208


@dataclass
class Prediction:
    """Static predictions for one structure.

    Attributes:
        energy: total energy, eV.
        forces: ``(N, 3)`` forces, eV/Å.
        stress: ``(3, 3)`` stress tensor, eV/Å^3 (ASE sign convention).
    """

    energy: float
    forces: np.ndarray
    stress: np.ndarray

    @property
    def max_force(self) -> float:
        """Largest per-atom force norm, eV/Å."""
        return float(np.linalg.norm(self.forces, axis=1).max()) if len(self.forces) else 0.0


class Potential(ABC):
    """Interface of an interatomic potential used for relaxation and hull energies.

    Subclasses set :attr:`name` and implement :meth:`predict` and
    :meth:`ase_calculator`; :meth:`check` may be refined to reject structures
    the model cannot handle.
    """

    #: Short identifier written into every output (e.g. ``"chgnet-0.3.0"``).
    name: str = "potential"
    #: Largest atomic number the model knows.
    max_atomic_number: int = 94
    #: Largest number of atoms per structure accepted by default.
    max_atoms: int = 500

    def describe(self) -> dict:
        """JSON-serialisable description written into outputs (name, version, limits)."""
        return {"name": self.name, "max_atomic_number": self.max_atomic_number, "max_atoms": self.max_atoms}

    def check(self, system: AtomicSystem) -> None:
        """Raise :class:`InvalidSystemError` naming the structure when the potential cannot handle it.

        Rejects molecules, unknown or unsupported elements, NaN coordinates,
        singular cells, overlapping atoms (< 0.5 Å) and cells above
        :attr:`max_atoms` atoms.
        """
        if not system.is_periodic:
            raise InvalidSystemError(f"{system.label}: {self.name} needs a periodic crystal, got a molecule")
        unsupported = sorted({int(z) for z in system.numbers if z > self.max_atomic_number})
        if unsupported:
            names = ", ".join(SYMBOLS[z] if z < len(SYMBOLS) else str(z) for z in unsupported)
            raise InvalidSystemError(f"{system.label}: element(s) {names} not supported by {self.name}")
        system.validate(max_atoms=self.max_atoms, min_distance=MIN_DISTANCE)

    @abstractmethod
    def predict(self, systems: Sequence[AtomicSystem], batch_size: int = 16) -> list[Prediction]:
        """Static energies, forces and stress for ``B`` crystals, batched; returns ``B`` predictions."""

    @abstractmethod
    def ase_calculator(self):
        """An ``ase.calculators.calculator.Calculator`` giving energy (eV), forces (eV/Å), stress (eV/Å^3)."""


class CHGNetPotential(Potential):
    """CHGNet (Deng et al., Nat. Mach. Intell. 2023) with its pretrained MPtrj weights.

    Args:
        model_name: pretrained weights shipped in the ``chgnet`` wheel (``"0.3.0"``).
        device: ``"cpu"`` or ``"cuda"``.
        max_atoms: structures with more atoms are rejected by :meth:`check`.
    """

    max_atomic_number = 94

    def __init__(self, model_name: str = "0.3.0", device: str = "cpu", max_atoms: int = 500):
        self.model_name = model_name
        self.device = device
        self.max_atoms = int(max_atoms)
        self.name = f"chgnet-{model_name}"
        self._model = None

    @property
    def model(self):
        """The loaded ``chgnet.model.CHGNet`` (loaded once, from the wheel's files, no network)."""
        if self._model is None:
            try:
                from chgnet.model import CHGNet
            except ImportError as exc:  # pragma: no cover - chgnet is a dependency
                raise ConfigError("the CHGNet potential needs the 'chgnet' package (pip install chgnet)") from exc
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    self._model = CHGNet.load(model_name=self.model_name, use_device=self.device, verbose=False)
            except ValueError as exc:
                raise ConfigError(f"unknown CHGNet model {self.model_name!r}: {exc}") from None
            self._model.graph_converter.set_isolated_atom_response("error")
            # CHGNet's own forward pass emits this harmless warning on every call
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad", category=UserWarning)
        return self._model

    def describe(self) -> dict:
        """Name, model version, device, limits and the number of parameters."""
        out = super().describe()
        out.update({"model": "CHGNet", "version": self.model_name, "device": self.device})
        return out

    def graph(self, system: AtomicSystem):
        """CHGNet crystal graph of ``system``; raises :class:`InvalidSystemError` with the reason."""
        self.check(system)
        try:
            return self.model.graph_converter(system.to_pymatgen(), graph_id=system.label)
        except (ValueError, RuntimeError) as exc:
            raise InvalidSystemError(f"{system.label}: {self.name} cannot build its graph: {exc}") from None

    def predict(self, systems: Sequence[AtomicSystem], batch_size: int = 16) -> list[Prediction]:
        """Batched static prediction; energies are totals (CHGNet's eV/atom times N).

        Raises :class:`InvalidSystemError` naming the first structure the model
        cannot handle; call :meth:`check` or :meth:`graph` per structure first to
        keep going past bad ones.
        """
        systems = list(systems)
        if not systems:
            return []
        graphs = [self.graph(s) for s in systems]
        raw = self.model.predict_graph(graphs, task="efs", batch_size=batch_size)
        if isinstance(raw, dict):
            raw = [raw]
        out = []
        for system, r in zip(systems, raw, strict=True):
            energy = float(r["e"]) * system.num_atoms
            out.append(Prediction(energy, np.asarray(r["f"], dtype=np.float64),
                                  np.asarray(r["s"], dtype=np.float64) * GPA_IN_EV_PER_A3))
        return out

    def predict_energies(self, systems: Sequence[AtomicSystem], batch_size: int = 32) -> np.ndarray:
        """Batched total energies only (no forces, faster), shape ``(B,)`` eV."""
        systems = list(systems)
        if not systems:
            return np.zeros(0)
        graphs = [self.graph(s) for s in systems]
        raw = self.model.predict_graph(graphs, task="e", batch_size=batch_size)
        if isinstance(raw, dict):
            raw = [raw]
        return np.array([float(r["e"]) * s.num_atoms for s, r in zip(systems, raw, strict=True)])

    def ase_calculator(self):
        """CHGNet's own ASE calculator sharing this model (stress converted GPa -> eV/Å^3)."""
        from chgnet.model.dynamics import CHGNetCalculator

        with contextlib.redirect_stdout(io.StringIO()):
            return CHGNetCalculator(model=self.model, use_device=self.device, on_isolated_atoms="error")


#: Registry of potentials by name; values build a :class:`Potential` from keyword arguments.
POTENTIALS: dict[str, Callable[..., Potential]] = {"chgnet": CHGNetPotential}


def get_potential(name: str = "chgnet", **kwargs) -> Potential:
    """Build a registered potential by name (``"chgnet"``); unknown names raise :class:`ConfigError`."""
    try:
        factory = POTENTIALS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown potential {name!r}; choose one of {sorted(POTENTIALS)}") from None
    return factory(**kwargs)
