"""Conditions a DiT can be trained and sampled on, their labels, and guidance per condition.

Supported now (crystals and molecules alike; a model supports what it was trained with):

- ``space_group``: the international number 1..230 (crystals). Training labels are MP-20's
  ``spacegroup.number`` column where the data has it (Materials Project's symmetry analysis),
  else spglib at ``symprec = 0.1`` Å on the structure (:data:`SYMPREC`), the tolerance the
  evaluation also uses (:func:`adit_torch.evaluate.crystals.spacegroup_number`). Molecules carry the null label.
- ``chemical_system``: the set of elements, as a multi-hot vector over atomic numbers
  1..:data:`NUM_ELEMENT_TYPES`; ``Li-Fe-O`` asks for samples whose elements lie inside {Li, Fe, O}.
- scalar properties (:data:`PROPERTIES`, in the model's order). Of crystals
  (:data:`CRYSTAL_PROPERTIES`, MP-20's columns, Materials Project's DFT values):
  ``formation_energy_per_atom`` (eV/atom), ``band_gap`` (eV) and ``e_above_hull`` (eV/atom). Of
  molecules (:data:`MOLECULE_PROPERTIES`, QM9's DFT values, the six of EDM's conditional
  benchmark in its units): ``alpha`` (Bohr^3), ``gap``, ``homo``, ``lumo`` (meV), ``mu`` (D) and
  ``Cv`` (cal/(mol K)). A model has the first ``dit.num_properties`` of them as slots (3: the
  crystals', 9: all) and is trained on those its data has values for (``property_trained`` in its
  header, with each slot's training mean and standard deviation, ``property_mean``,
  ``property_std``). The target is normalised with them; each property can be given alone or with
  the others, and only for its own kind.

Constraints the sampler applies without a trained condition (every model takes them):

- ``num_atoms``: every sample has exactly this many atoms (the same as ``adit sample --num-atoms``).
- ``formula``: a composition such as ``LiFePO4``, kept in its reduced form. Each sample has a
  multiple of the formula unit's atoms (drawn from the training histogram's multiples unless
  ``num_atoms`` is given), its atom types are assigned with exactly the formula's counts (the
  assignment of most decoder log-probability, :func:`assign_types`), and the formula's elements are
  the ``chemical_system`` condition when the model was trained with it.
- with ``space_group`` set, each sample's atom count is drawn from the training crystals of that
  group (the checkpoint's ``num_atoms_hist_by_space_group``), each element gets a count the
  group's sites can hold (:func:`adit_torch.symmetry.compatible_types`), and each decoded crystal is snapped
  onto the group when a symmetric structure lies within 1 Å (``symmetrize``, on by default;
  :mod:`adit_torch.symmetry`). Samples it cannot snap are kept as decoded, with
  ``info["symmetrized"] = False``.
- with ``chemical_system`` (or ``formula``) set, decoding keeps to the set: each atom's type is
  the most probable element of the set (``restrict_elements``, on by default; the benchmark
  ``benchmarks/conditioning.py`` reports the guided model's leak with it off).

Guidance per condition: with base scale ``s`` (the periodic label, the model's ``cfg_scale``)
and one scale ``s_k`` per optional condition ``k``, the denoiser is

``f(null) + s * (f(base) - f(null)) + sum_k s_k * (f(base + k) - f(base))``

(nested classifier-free guidance: each condition pushes away from the prediction without it).
This is a weighted sum of ``2 + K`` predictions, computed in one batched forward by
:class:`adit_torch.dit.GuidedDenoiser`; :func:`guidance_terms` gives the conditions and weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from adit_torch.dit import CRYSTAL, MOLECULE, Condition
from adit_torch.errors import CheckpointError, ConfigError

#: spglib tolerance (Å) for space-group labels of data without them, and of generated crystals.
SYMPREC = 0.1
#: Length of the chemical-system vector: atomic numbers 1..100.
NUM_ELEMENT_TYPES = 100
#: Scalar properties of crystals (MP-20's columns) with their units.
CRYSTAL_PROPERTIES = {"formation_energy_per_atom": "eV/atom", "band_gap": "eV", "e_above_hull": "eV/atom"}
#: Scalar properties of molecules (QM9, EDM's six, in EDM's units; :mod:`adit_torch.datasets.qm9`).
MOLECULE_PROPERTIES = {"alpha": "Bohr^3", "gap": "meV", "homo": "meV", "lumo": "meV", "mu": "D",
                       "Cv": "cal/(mol K)"}
#: Every property slot in the model's order, with units: a model with ``num_properties`` P has the first P.
PROPERTIES = {**CRYSTAL_PROPERTIES, **MOLECULE_PROPERTIES}
#: The kind of system each property belongs to.
PROPERTY_KIND = {**{k: "crystal" for k in CRYSTAL_PROPERTIES}, **{k: "molecule" for k in MOLECULE_PROPERTIES}}
#: The ``dit.num_properties`` a model may have: none, the crystals' slots, or all.
PROPERTY_SLOTS = (0, len(CRYSTAL_PROPERTIES), len(PROPERTIES))
#: Condition keys of ``adit sample --condition`` -> the DiT config field that switches them on.
CONDITION_FIELDS = {"space_group": "num_space_groups", "chemical_system": "num_element_types",
                    **{name: "num_properties" for name in PROPERTIES}}
#: Sampler constraints of ``--condition`` that need no trained condition (module doc).
CONSTRAINTS = ("formula", "num_atoms")
#: Largest ``num_atoms`` a condition may ask for.
MAX_NUM_ATOMS = 1000
#: Default guidance scale of an optional condition when ``--guidance`` does not name it.
DEFAULT_CONDITION_SCALE = 1.0


def condition_labels(data) -> dict[str, np.ndarray]:
    """Per-system labels of a training set (a ``JointSystems`` or ``SystemDataset`` list of parts).

    Returns ``space_group (M,) int64`` (0 = none: molecules, or spglib found none),
    ``elements (M, NUM_ELEMENT_TYPES) float32`` multi-hot, and the raw :data:`PROPERTIES`
    ``properties (M, P) float32`` (units of :data:`PROPERTIES`, P = ``len(PROPERTIES)``) with
    ``properties_mask (M, P) bool`` (False where a system has no finite value: a property of the
    other kind, or a missing column), in the order of ``data``.
    """
    parts = getattr(data, "parts", [data])
    groups, elements, values, masks = [], [], [], []
    for part in parts:
        m = len(part)
        offsets = np.asarray(part.offsets)
        numbers = np.asarray(part.numbers, dtype=np.int64)
        multi = np.zeros((m, NUM_ELEMENT_TYPES), dtype=np.float32)
        owner = np.repeat(np.arange(m), np.diff(offsets))
        inside = (numbers >= 1) & (numbers <= NUM_ELEMENT_TYPES)
        multi[owner[inside], numbers[inside] - 1] = 1.0
        elements.append(multi)
        sg = np.zeros(m, dtype=np.int64)
        periodic = np.asarray(part.periodic, dtype=bool)  # NaN lattices are molecules
        known = part.props.get("spacegroup") if hasattr(part, "props") else None
        for i in np.nonzero(periodic)[0]:
            value = int(known[i]) if known is not None and str(known[i]).lstrip("-").isdigit() else 0
            if not 1 <= value <= 230:
                from adit_torch.evaluate.crystals import spacegroup_number

                value = spacegroup_number(part[int(i)], SYMPREC) or 0
            sg[i] = value
        groups.append(sg)
        props = np.full((m, len(PROPERTIES)), np.nan, dtype=np.float64)
        for j, name in enumerate(PROPERTIES):
            column = part.props.get(name) if hasattr(part, "props") else None
            if column is not None and np.issubdtype(np.asarray(column).dtype, np.number):
                props[:, j] = np.asarray(column, dtype=np.float64)
        crystal_cols = np.array([PROPERTY_KIND[name] == "crystal" for name in PROPERTIES])
        props[np.ix_(~periodic, crystal_cols)] = np.nan
        props[np.ix_(periodic, ~crystal_cols)] = np.nan
        masks.append(np.isfinite(props))
        values.append(np.nan_to_num(props, nan=0.0).astype(np.float32))
    return {"space_group": np.concatenate(groups), "elements": np.concatenate(elements),
            "properties": np.concatenate(values), "properties_mask": np.concatenate(masks)}


def property_normalisation(labels: dict[str, np.ndarray],
                           num_slots: int | None = None) -> tuple[list[float], list[float], list[str]]:
    """Mean and standard deviation of each of the first ``num_slots`` :data:`PROPERTIES` (default all).

    Returns ``(means, stds, trained)``: over the systems that have each property; a slot with fewer
    than 2 distinct training values is not trained (mean 0, std 1, left out of ``trained``).
    :class:`ConfigError` when no slot can be trained.
    """
    names = list(PROPERTIES)[:len(PROPERTIES) if num_slots is None else num_slots]
    means, stds, trained = [], [], []
    for j, name in enumerate(names):
        have = labels["properties"][labels["properties_mask"][:, j], j].astype(np.float64)
        if len(have) >= 2 and np.std(have) > 0:
            means.append(float(np.mean(have)))
            stds.append(float(np.std(have)))
            trained.append(name)
        else:
            means.append(0.0)
            stds.append(1.0)
    if not trained:
        raise ConfigError(f"no property of {', '.join(names)} has 2 distinct values in the training data; "
                          "it cannot train property conditions (set dit.num_properties 0)")
    return means, stds, trained


def model_conditions(dit_cfg, stats: dict | None = None) -> list[str]:
    """The ``--condition`` keys a DiT supports (besides the number of atoms, which every model takes).

    ``dit_cfg`` gives the trained fields and the property slots (the first ``num_properties`` of
    :data:`PROPERTIES`); ``stats`` (the checkpoint's data header), where it lists ``property_trained``,
    narrows the slots to the properties its training data had.
    """
    slots = list(PROPERTIES)[:getattr(dit_cfg, "num_properties", 0)]
    if stats and "property_trained" in stats:
        slots = [k for k in slots if k in stats["property_trained"]]
    return [key for key, name in CONDITION_FIELDS.items()
            if (key in slots if key in PROPERTIES else getattr(dit_cfg, name, 0))]


@dataclass
class SampleConditions:
    """What to generate: optional conditions and a guidance scale for each.

    Attributes:
        space_group: international number 1..230, or None.
        chemical_system: sorted atomic numbers, or None.
        properties: target values of :data:`PROPERTIES` (their units), by name.
        guidance: condition key -> scale (missing keys use :data:`DEFAULT_CONDITION_SCALE`).
        formula: reduced composition (atomic number -> count), or None.
        num_atoms: exact atom count of every sample, or None.
        restrict_elements: keep decoding to ``chemical_system`` (default True).
        symmetrize: with ``space_group``, snap each decoded crystal onto the group
            (:func:`adit_torch.symmetry.symmetrize`; default True), draw atom counts from the
            training crystals of that group where the model records them, and give each element a
            count the group's sites can hold (:func:`adit_torch.symmetry.compatible_types`).
    """

    space_group: int | None = None
    chemical_system: tuple[int, ...] | None = None
    properties: dict[str, float] = field(default_factory=dict)
    guidance: dict[str, float] = field(default_factory=dict)
    formula: dict[int, int] | None = None
    num_atoms: int | None = None
    restrict_elements: bool = True
    symmetrize: bool = True

    def keys(self) -> list[str]:
        """The trained condition keys that are set (each is one guidance term)."""
        return [k for k in CONDITION_FIELDS
                if (k in self.properties if k in PROPERTIES else getattr(self, k) is not None)]

    def constraint_keys(self) -> list[str]:
        """The sampler constraints that are set (``formula``, ``num_atoms``; no guidance term)."""
        return [k for k in CONSTRAINTS if getattr(self, k) is not None]

    def formula_size(self) -> int:
        """Atoms in one unit of the reduced ``formula`` (0 without a formula)."""
        return sum(self.formula.values()) if self.formula else 0

    def allowed_elements(self) -> tuple[int, ...] | None:
        """Atomic numbers decoding keeps to (sorted), or None when it is free."""
        if not self.restrict_elements or self.chemical_system is None:
            return None
        return self.chemical_system

    def as_dict(self) -> dict:
        """JSON-friendly record (chemical system as symbols ``Li-Fe-O``) with the scales used."""
        out: dict = {}
        if self.space_group is not None:
            out["space_group"] = self.space_group
        if self.chemical_system is not None:
            out["chemical_system"] = "-".join(symbol(z) for z in self.chemical_system)
        out.update({k: self.properties[k] for k in PROPERTIES if k in self.properties})
        if self.formula is not None:
            out["formula"] = formula_string(self.formula)
        if self.num_atoms is not None:
            out["num_atoms"] = self.num_atoms
        if self.keys():
            out["guidance"] = {k: self.scale(k) for k in self.keys()}
        return out

    def scale(self, key: str) -> float:
        """Guidance scale of condition ``key`` (a formula's scale is its chemical system's)."""
        if key == "chemical_system" and "formula" in self.guidance:
            return float(self.guidance["formula"])
        return float(self.guidance.get(key, DEFAULT_CONDITION_SCALE))

    def check_sizes(self, counts) -> None:
        """:class:`ConfigError` when atom counts ``counts`` (ints) break ``num_atoms`` or the formula unit."""
        counts = np.atleast_1d(np.asarray(counts))
        if self.num_atoms is not None and (counts != self.num_atoms).any():
            raise ConfigError(f"--condition num_atoms={self.num_atoms} and --num-atoms "
                              f"{sorted(set(counts.tolist()))} disagree")
        size = self.formula_size()
        if size and (counts % size).any():
            raise ConfigError(f"--condition formula={formula_string(self.formula)}: a sample has a multiple of "
                              f"its {size} atoms; {sorted(set(counts[counts % size != 0].tolist()))} is not one")

    def check(self, dit_cfg, kind: str, where: str = "--condition", stats: dict | None = None) -> None:
        """:class:`ConfigError` for a condition the model was not trained on, or that does not fit ``kind``.

        ``stats``: the checkpoint's data header (its ``property_trained``, see :func:`model_conditions`).
        """
        supported = model_conditions(dit_cfg, stats)
        if self.formula is not None and "chemical_system" not in supported:
            raise ConfigError(f"{where} formula: needs a model trained with chemical_system; this one supports "
                              f"{', '.join(supported) if supported else 'no condition'} (and num_atoms)")
        for key in self.keys():
            if key not in supported:
                from adit_torch.pretrained import models_with_conditions

                able = models_with_conditions([key])
                raise ConfigError(f"{where} {key}: this model was not trained with it; it supports "
                                  f"{', '.join(supported) if supported else 'no condition'} (and num_atoms)"
                                  + (f"; shipped models trained with it: {', '.join(able)}" if able else ""))
        if self.space_group is not None and kind != "crystal":
            raise ConfigError(f"{where} space_group: only crystals have a space group, not a {kind}")
        for key in self.properties:
            if PROPERTY_KIND[key] != kind:
                source = "crystals' (MP-20)" if PROPERTY_KIND[key] == "crystal" else "molecules' (QM9)"
                raise ConfigError(f"{where} {key}: this property condition is {source}, not a {kind}'s")
        for key in self.guidance:
            if key == "num_atoms":
                raise ConfigError("--guidance num_atoms: the number of atoms is exact, it has no guidance scale")
            if key not in self.keys() and not (key == "formula" and self.formula is not None):
                raise ConfigError(f"--guidance {key}: no such condition is set (set: "
                                  f"{', '.join(self.keys() + self.constraint_keys()) or 'none'})")


def parse_conditions(items: list[str] | None, guidance: list[str] | None = None) -> SampleConditions:
    """``["space_group=225", "chemical_system=Li-Fe-O"]`` and ``["space_group=2.0"]`` -> :class:`SampleConditions`.

    Each problem is a :class:`ConfigError` naming the item: an unknown key, a space group outside
    1..230, an element symbol that does not exist, a repeated key, a scale that is not a number.
    """
    from ase.data import atomic_numbers

    out = SampleConditions()
    seen: set[str] = set()
    for item in items or []:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise ConfigError(f"--condition {item!r}: expected KEY=VALUE, e.g. space_group=225")
        if key not in CONDITION_FIELDS and key not in CONSTRAINTS:
            raise ConfigError(f"--condition {item!r}: unknown key {key!r}; known: "
                              f"{', '.join([*CONDITION_FIELDS, *CONSTRAINTS])}")
        if key in seen:
            raise ConfigError(f"--condition {key} is given twice")
        seen.add(key)
        if key == "num_atoms":
            if not value.isdigit() or not 1 <= int(value) <= MAX_NUM_ATOMS:
                raise ConfigError(f"--condition {item!r}: the number of atoms is an integer 1..{MAX_NUM_ATOMS}")
            out.num_atoms = int(value)
        elif key == "formula":
            out.formula = parse_formula(value, f"--condition {item!r}")
        elif key in PROPERTIES:
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not np.isfinite(number):
                raise ConfigError(f"--condition {item!r}: {key} is a number in {PROPERTIES[key]}")
            out.properties[key] = number
        elif key == "space_group":
            if not value.isdigit() or not 1 <= int(value) <= 230:
                raise ConfigError(f"--condition {item!r}: a space group is an international number 1..230")
            out.space_group = int(value)
        else:
            symbols = [s.strip() for s in value.replace(",", "-").split("-") if s.strip()]
            unknown = [s for s in symbols if s not in atomic_numbers or atomic_numbers[s] == 0]
            if unknown or not symbols:
                what = ", ".join(unknown) if unknown else repr(value)
                raise ConfigError(f"--condition {item!r}: not element symbols: {what}")
            numbers = sorted({atomic_numbers[s] for s in symbols})
            if numbers[-1] > NUM_ELEMENT_TYPES:
                raise ConfigError(f"--condition {item!r}: elements beyond Z = {NUM_ELEMENT_TYPES} are not supported")
            out.chemical_system = tuple(numbers)
    if out.formula is not None:
        elements = tuple(sorted(out.formula))
        if out.chemical_system is not None and not set(elements) <= set(out.chemical_system):
            raise ConfigError(f"--condition formula={formula_string(out.formula)} has elements outside "
                              f"chemical_system={'-'.join(symbol(z) for z in out.chemical_system)}")
        if out.chemical_system is None:
            out.chemical_system = elements
        if out.num_atoms is not None and out.num_atoms % out.formula_size():
            raise ConfigError(f"--condition num_atoms={out.num_atoms} is not a multiple of formula="
                              f"{formula_string(out.formula)}'s {out.formula_size()} atoms")
    for item in guidance or []:
        key, sep, value = item.partition("=")
        try:
            scale = float(value)
        except ValueError:
            scale = None
        if not sep or scale is None or not np.isfinite(scale):
            raise ConfigError(f"--guidance {item!r}: expected KEY=SCALE, e.g. space_group=2.0")
        out.guidance[key.strip()] = scale
    return out


def symbol(z: int) -> str:
    """Element symbol of atomic number ``z``."""
    from ase.data import chemical_symbols

    return chemical_symbols[z]


def parse_formula(text: str, where: str = "formula") -> dict[int, int]:
    """``"LiFePO4"`` -> reduced counts by atomic number ``{3: 1, 8: 4, 15: 1, 26: 1}``.

    :class:`ConfigError` naming ``where`` for text that is not a formula of real elements.
    """
    import math

    from ase.data import atomic_numbers
    from ase.formula import Formula

    try:
        counts = Formula(text.strip()).count()
    except ValueError as exc:
        raise ConfigError(f"{where}: not a chemical formula ({exc})") from None
    unknown = [sym for sym in counts if sym not in atomic_numbers or atomic_numbers[sym] == 0]
    if unknown or not counts or min(counts.values()) < 1:
        raise ConfigError(f"{where}: not a chemical formula of real elements"
                          + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    if max(atomic_numbers[sym] for sym in counts) > NUM_ELEMENT_TYPES:
        raise ConfigError(f"{where}: elements beyond Z = {NUM_ELEMENT_TYPES} are not supported")
    g = math.gcd(*counts.values())
    return {atomic_numbers[sym]: n // g for sym, n in counts.items()}


def formula_string(formula: dict[int, int]) -> str:
    """Reduced counts by atomic number -> pymatgen's reduced formula (``"LiFePO4"``), the canonical spelling."""
    from pymatgen.core import Composition

    return Composition({symbol(z): n for z, n in formula.items()}).reduced_formula


def reduced_formula_of(numbers) -> dict[int, int]:
    """Atomic numbers ``(n,)`` of one system -> its reduced counts by atomic number."""
    import math

    zs, ns = np.unique(np.asarray(numbers, dtype=np.int64), return_counts=True)
    g = math.gcd(*ns.tolist())
    return {int(z): int(n) // g for z, n in zip(zs, ns)}


def assign_types(logits: torch.Tensor, elements: tuple[int, ...] | None = None,
                 formula: dict[int, int] | None = None) -> np.ndarray:
    """Atom types of one system from its decoder logits under the sampler's constraints.

    Args:
        logits: ``(n, Z_max)`` type logits over atomic numbers 1..Z_max (padding and [MASK] removed).
        elements: allowed atomic numbers; each atom takes the most probable of them.
        formula: reduced counts by atomic number; ``n`` must be a multiple of its size. The types are
            the assignment with exactly ``n / size`` formula units that maximises the summed log
            probability (a linear assignment over the atoms and the formula's slots).

    Returns:
        ``(n,)`` atomic numbers.
    """
    logp = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
    if formula is not None:
        n, size = logp.shape[0], sum(formula.values())
        if n % size:
            raise ConfigError(f"{n} atoms are not a multiple of formula {formula_string(formula)}'s {size}")
        return assign_counts(logp, {z: c * (n // size) for z, c in formula.items()})[0]
    if elements is not None:
        allowed = np.array(elements, dtype=np.int64)
        return allowed[np.argmax(logp[:, allowed - 1], axis=-1)]
    return np.argmax(logp, axis=-1).astype(np.int64) + 1


def assign_counts(logp: np.ndarray, counts: dict[int, int]) -> tuple[np.ndarray, float]:
    """The atom types with exactly ``counts`` (atomic number -> atoms, summing to ``n``) of most summed
    log-probability, and that sum: a linear assignment of the ``(n, Z_max)`` log-probabilities ``logp``
    to the composition's slots. Returns ``((n,) atomic numbers, score)``."""
    from scipy.optimize import linear_sum_assignment

    slots = np.repeat(np.array(sorted(counts)), [counts[z] for z in sorted(counts)])
    rows, cols = linear_sum_assignment(-logp[:, slots - 1])
    types = np.empty(logp.shape[0], dtype=np.int64)
    types[rows] = slots[cols]
    return types, float(logp[rows, slots[cols] - 1].sum())


def warn_out_of_range(conditions: SampleConditions, stats: dict | None) -> list[str]:
    """A warning (returned and issued) for each property target beyond the training mean +- 3 std."""
    import warnings

    out = []
    if not stats or "property_mean" not in stats:
        return out
    for j, name in enumerate(list(PROPERTIES)[:len(stats["property_mean"])]):
        if name in conditions.properties:
            mean, std = stats["property_mean"][j], stats["property_std"][j]
            lo, hi = mean - 3 * std, mean + 3 * std
            if not lo <= conditions.properties[name] <= hi:
                out.append(f"--condition {name}={conditions.properties[name]:g} lies outside the training "
                           f"data's mean +- 3 std, {lo:.3g}..{hi:.3g} {PROPERTIES[name]}; the model extrapolates")
                warnings.warn(out[-1], UserWarning, stacklevel=2)
    return out


def num_guidance_terms(conditions: SampleConditions | None, scale: float) -> int:
    """How many predictions :func:`guidance_terms` combines: the forwards per sample and step."""
    extras = len(conditions.keys()) if conditions is not None else 0
    return 1 if not extras and scale == 1.0 else 2 + extras


def _base_condition(kind: str, batch: int, dit_cfg, device) -> Condition:
    """``batch`` rows of the kind label alone (every optional condition present but null)."""
    label = CRYSTAL if kind == "crystal" else MOLECULE
    base = Condition(periodic=torch.full((batch,), label, dtype=torch.long, device=device))
    if getattr(dit_cfg, "num_space_groups", 0):
        base.space_group = torch.zeros(batch, dtype=torch.long, device=device)
    if getattr(dit_cfg, "num_element_types", 0):
        base.elements = torch.zeros(batch, dit_cfg.num_element_types, device=device)
    if getattr(dit_cfg, "num_properties", 0):
        base.properties = torch.zeros(batch, dit_cfg.num_properties, device=device)
        base.properties_mask = torch.zeros(batch, dit_cfg.num_properties, dtype=torch.bool, device=device)
    return base


def _with_condition(full: Condition, key: str, conditions: SampleConditions, dit_cfg, device,
                    stats: dict | None) -> Condition:
    """``full`` (a fresh copy) with the asked value of condition ``key`` set on every row."""
    batch = full.periodic.shape[0]
    if key in PROPERTIES:
        if not stats or "property_mean" not in stats:
            raise CheckpointError(f"--condition {key}: the checkpoint has no property normalisation "
                                  "(property_mean / property_std in its header)")
        j = list(PROPERTIES).index(key)
        target = (conditions.properties[key] - stats["property_mean"][j]) / stats["property_std"][j]
        full.properties = full.properties.clone()
        full.properties[:, j] = target
        full.properties_mask = full.properties_mask.clone()
        full.properties_mask[:, j] = True
    elif key == "space_group":
        full.space_group = torch.full((batch,), conditions.space_group, dtype=torch.long, device=device)
    else:
        vec = torch.zeros(batch, dit_cfg.num_element_types, device=device)
        vec[:, torch.tensor(conditions.chemical_system, device=device) - 1] = 1.0
        full.elements = vec
    return full


def all_conditions(kind: str, batch: int, conditions: SampleConditions | None, dit_cfg, device,
                   stats: dict | None = None) -> Condition:
    """``batch`` rows with the kind label and every asked condition set: the one unguided prediction
    used outside a guidance interval (:class:`adit_torch.dit.GuidedDenoiser`)."""
    full = _base_condition(kind, batch, dit_cfg, device)
    for key in (conditions.keys() if conditions is not None else []):
        full = _with_condition(full.index(slice(None)), key, conditions, dit_cfg, device, stats)
    return full


def guidance_terms(kind: str, batch: int, conditions: SampleConditions | None, scale: float, dit_cfg,
                   device, stats: dict | None = None) -> list[tuple[Condition, float]]:
    """The conditions and weights whose weighted sum of predictions is the guided denoiser (module doc).

    ``batch`` rows each; ``scale`` is the base (periodic) guidance scale. Without optional conditions
    this is ``[(null, 1 - scale), (base, scale)]``, or ``[(base, 1)]`` when ``scale == 1``; each optional
    condition adds ``(base with that condition, its scale)`` and takes its scale from the base term's weight. ``stats``
    (the checkpoint's data header) gives the normalisation of property targets.
    """
    base = _base_condition(kind, batch, dit_cfg, device)
    extras = []
    for key in (conditions.keys() if conditions is not None else []):
        extras.append((_with_condition(base.index(slice(None)), key, conditions, dit_cfg, device, stats),
                       conditions.scale(key)))
    if not extras and scale == 1.0:
        return [(base, 1.0)]
    terms = [(base.null(), 1.0 - scale), (base, scale - sum(s for _, s in extras))]
    return terms + extras
