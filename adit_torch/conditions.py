"""Conditions a DiT can be trained and sampled on, their labels, and guidance per condition.

Supported now (crystals and molecules alike; a model supports what it was trained with):

- ``space_group``: the international number 1..230 (crystals). Training labels are MP-20's
  ``spacegroup.number`` column where the data has it (Materials Project's symmetry analysis),
  else spglib at ``symprec = 0.1`` Å on the structure (:data:`SYMPREC`), the tolerance the
  evaluation also uses (:func:`adit_torch.evaluate.crystals.spacegroup_number`). Molecules carry the null label.
- ``chemical_system``: the set of elements, as a multi-hot vector over atomic numbers
  1..:data:`NUM_ELEMENT_TYPES`; ``Li-Fe-O`` asks for samples whose elements lie inside {Li, Fe, O}.
- scalar properties of crystals (:data:`PROPERTIES`, MP-20's columns, Materials Project's DFT
  values): ``formation_energy_per_atom`` (eV/atom), ``band_gap`` (eV) and ``e_above_hull``
  (eV/atom). A model trained on them (``dit.num_properties`` 3) stores each one's training mean
  and standard deviation (``property_mean``, ``property_std`` in its header); the target is
  normalised with them, and each property can be given alone or with the others.

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
#: Scalar properties of crystals a model can be trained on (MP-20's columns), in the model's order, with units.
PROPERTIES = {"formation_energy_per_atom": "eV/atom", "band_gap": "eV", "e_above_hull": "eV/atom"}
#: Condition keys of ``adit sample --condition`` -> the DiT config field that switches them on.
CONDITION_FIELDS = {"space_group": "num_space_groups", "chemical_system": "num_element_types",
                    **{name: "num_properties" for name in PROPERTIES}}
#: Default guidance scale of an optional condition when ``--guidance`` does not name it.
DEFAULT_CONDITION_SCALE = 1.0


def condition_labels(data) -> dict[str, np.ndarray]:
    """Per-system labels of a training set (a ``JointSystems`` or ``SystemDataset`` list of parts).

    Returns ``space_group (M,) int64`` (0 = none: molecules, or spglib found none),
    ``elements (M, NUM_ELEMENT_TYPES) float32`` multi-hot, and the raw :data:`PROPERTIES`
    ``properties (M, 3) float32`` (units of :data:`PROPERTIES`) with ``properties_mask (M, 3) bool``
    (False where a system has no finite value: molecules, or a missing column), in the order of ``data``.
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
        props[~periodic] = np.nan
        masks.append(np.isfinite(props))
        values.append(np.nan_to_num(props, nan=0.0).astype(np.float32))
    return {"space_group": np.concatenate(groups), "elements": np.concatenate(elements),
            "properties": np.concatenate(values), "properties_mask": np.concatenate(masks)}


def property_normalisation(labels: dict[str, np.ndarray]) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each of :data:`PROPERTIES` over the systems that have it."""
    means, stds = [], []
    for j, name in enumerate(PROPERTIES):
        have = labels["properties"][labels["properties_mask"][:, j], j].astype(np.float64)
        if len(have) < 2 or not np.std(have) > 0:
            raise ConfigError(f"property {name}: fewer than 2 distinct training values; the data cannot "
                              "train this condition")
        means.append(float(np.mean(have)))
        stds.append(float(np.std(have)))
    return means, stds


def model_conditions(dit_cfg) -> list[str]:
    """The ``--condition`` keys a DiT config supports (besides the number of atoms, which every model takes)."""
    return [key for key, name in CONDITION_FIELDS.items() if getattr(dit_cfg, name, 0)]


@dataclass
class SampleConditions:
    """What to generate: optional conditions and a guidance scale for each.

    Attributes:
        space_group: international number 1..230, or None.
        chemical_system: sorted atomic numbers, or None.
        properties: target values of :data:`PROPERTIES` (their units), by name.
        guidance: condition key -> scale (missing keys use :data:`DEFAULT_CONDITION_SCALE`).
    """

    space_group: int | None = None
    chemical_system: tuple[int, ...] | None = None
    properties: dict[str, float] = field(default_factory=dict)
    guidance: dict[str, float] = field(default_factory=dict)

    def keys(self) -> list[str]:
        """The condition keys that are set."""
        return [k for k in CONDITION_FIELDS
                if (k in self.properties if k in PROPERTIES else getattr(self, k) is not None)]

    def as_dict(self) -> dict:
        """JSON-friendly record (chemical system as symbols ``Li-Fe-O``) with the scales used."""
        from ase.data import chemical_symbols

        out: dict = {}
        if self.space_group is not None:
            out["space_group"] = self.space_group
        if self.chemical_system is not None:
            out["chemical_system"] = "-".join(chemical_symbols[z] for z in self.chemical_system)
        out.update({k: self.properties[k] for k in PROPERTIES if k in self.properties})
        if out:
            out["guidance"] = {k: self.scale(k) for k in self.keys()}
        return out

    def scale(self, key: str) -> float:
        """Guidance scale of condition ``key``."""
        return float(self.guidance.get(key, DEFAULT_CONDITION_SCALE))

    def check(self, dit_cfg, kind: str, where: str = "--condition") -> None:
        """:class:`ConfigError` for a condition the model was not trained on, or that does not fit ``kind``."""
        supported = model_conditions(dit_cfg)
        for key in self.keys():
            if key not in supported:
                raise ConfigError(f"{where} {key}: this model was not trained with it; it supports "
                                  f"{', '.join(supported) if supported else 'no condition'} (and num_atoms)")
        if self.space_group is not None and kind != "crystal":
            raise ConfigError(f"{where} space_group: only crystals have a space group, not a {kind}")
        for key in self.properties:
            if kind != "crystal":
                raise ConfigError(f"{where} {key}: the property conditions are crystals' (MP-20), not a {kind}'s")
        for key in self.guidance:
            if key not in self.keys():
                raise ConfigError(f"--guidance {key}: no such condition is set (set: "
                                  f"{', '.join(self.keys()) or 'none'})")


def parse_conditions(items: list[str] | None, guidance: list[str] | None = None) -> SampleConditions:
    """``["space_group=225", "chemical_system=Li-Fe-O"]`` and ``["space_group=2.0"]`` -> :class:`SampleConditions`.

    Each problem is a :class:`ConfigError` naming the item: an unknown key, a space group outside
    1..230, an element symbol that does not exist, a repeated key, a scale that is not a number.
    """
    from ase.data import atomic_numbers

    out = SampleConditions()
    for item in items or []:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise ConfigError(f"--condition {item!r}: expected KEY=VALUE, e.g. space_group=225")
        if key not in CONDITION_FIELDS:
            raise ConfigError(f"--condition {item!r}: unknown key {key!r}; known: {', '.join(CONDITION_FIELDS)} "
                              "(the number of atoms is --num-atoms)")
        if key in out.keys():
            raise ConfigError(f"--condition {key} is given twice")
        if key in PROPERTIES:
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


def num_guidance_terms(conditions: SampleConditions | None, scale: float) -> int:
    """How many predictions :func:`guidance_terms` combines: the forwards per sample and step."""
    extras = len(conditions.keys()) if conditions is not None else 0
    return 1 if not extras and scale == 1.0 else 2 + extras


def guidance_terms(kind: str, batch: int, conditions: SampleConditions | None, scale: float, dit_cfg,
                   device, stats: dict | None = None) -> list[tuple[Condition, float]]:
    """The conditions and weights whose weighted sum of predictions is the guided denoiser (module doc).

    ``batch`` rows each; ``scale`` is the base (periodic) guidance scale. Without optional conditions
    this is ``[(base, scale), (null, 1 - scale)]``, or ``[(base, 1)]`` when ``scale == 1``. ``stats``
    (the checkpoint's data header) gives the normalisation of property targets.
    """
    label = CRYSTAL if kind == "crystal" else MOLECULE
    base = Condition(periodic=torch.full((batch,), label, dtype=torch.long, device=device))
    if getattr(dit_cfg, "num_space_groups", 0):
        base.space_group = torch.zeros(batch, dtype=torch.long, device=device)
    if getattr(dit_cfg, "num_element_types", 0):
        base.elements = torch.zeros(batch, dit_cfg.num_element_types, device=device)
    if getattr(dit_cfg, "num_properties", 0):
        base.properties = torch.zeros(batch, dit_cfg.num_properties, device=device)
        base.properties_mask = torch.zeros(batch, dit_cfg.num_properties, dtype=torch.bool, device=device)
    extras = []
    for key in (conditions.keys() if conditions is not None else []):
        full = base.index(slice(None))
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
        extras.append((full, conditions.scale(key)))
    if not extras and scale == 1.0:
        return [(base, 1.0)]
    terms = [(base.null(), 1.0 - scale), (base, scale - sum(s for _, s in extras))]
    return terms + extras
