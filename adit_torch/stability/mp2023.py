"""The Materials Project convex hull of 2023-02-07 used by Matbench Discovery (optional, online).

The hull is Matbench Discovery's ``PatchedPhaseDiagram`` of all MP entries
with MP2020-corrected DFT energies. It comes with the optional extra
``pip install aiida-adit[hull]`` (``matbench-discovery``), which downloads
and caches the file on first use. Nothing is downloaded at import time.

Energies predicted by CHGNet 0.3.0 (trained on MPtrj, whose energies carry
the MP2020 corrections) are compared with this hull as they are, the way
Matbench Discovery scores MPtrj-trained potentials.
"""

from __future__ import annotations

import gzip
import pickle

from adit_torch.errors import ConfigError
from adit_torch.stability.hull import ReferenceHull

NAME = "mp2023-02-07-ppd"


class PatchedHull(ReferenceHull):
    """A :class:`ReferenceHull` backed by a pymatgen ``PatchedPhaseDiagram`` (one big precomputed hull).

    Args:
        ppd: ``pymatgen.analysis.phase_diagram.PatchedPhaseDiagram``.
        name: name written into outputs.
        metadata: description (source file, date).
    """

    def __init__(self, ppd, name: str = NAME, metadata=None):
        super().__init__(ppd.all_entries, name, metadata)
        self.ppd = ppd

    def e_above_hull(self, composition, energy: float) -> float:
        """Energy above the MP hull, eV/atom (negative below it); ``energy`` is the total energy in eV."""
        from pymatgen.core import Composition
        from pymatgen.entries.computed_entries import ComputedEntry

        from adit_torch.errors import InvalidSystemError

        comp = Composition(composition)
        missing = sorted({el.symbol for el in comp.elements} - self.elements)
        if missing:
            raise InvalidSystemError(f"element(s) {', '.join(missing)} have no reference entry in hull {self.name!r}")
        entry = ComputedEntry(comp, float(energy), entry_id="query")
        return float(self.ppd.get_e_above_hull(entry, allow_negative=True))


def load_mp2023_hull() -> PatchedHull:
    """Load (downloading once, through ``matbench-discovery``) the MP 2023-02-07 patched phase diagram.

    Raises :class:`ConfigError` with the remedy when ``matbench-discovery`` is
    not installed or the file cannot be fetched (offline).
    """
    try:
        from matbench_discovery.data import DataFiles
    except ImportError:
        raise ConfigError(
            "the 'mp2023' reference hull needs the optional package matbench-discovery "
            "(pip install 'aiida-adit[hull]') and network access on first use; "
            "use --reference offline or a file of reference entries instead"
        ) from None
    try:
        path = DataFiles.mp_patched_phase_diagram.path
        with gzip.open(path, "rb") as fh:
            ppd = pickle.load(fh)  # the file Matbench Discovery publishes; a pymatgen object
    except Exception as exc:  # network errors come in many types  # noqa: BLE001
        raise ConfigError(
            f"could not obtain the MP 2023-02-07 hull through matbench-discovery ({type(exc).__name__}: {exc}); "
            "it needs network access once, then it is cached; offline, use --reference offline"
        ) from None
    return PatchedHull(ppd, NAME, {"source": str(path), "energy": "MP2020-corrected GGA/GGA+U (DFT)",
                                  "date": "2023-02-07"})
