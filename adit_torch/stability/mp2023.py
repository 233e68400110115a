"""The Materials Project convex hull of 2023-02-07 used by Matbench Discovery (optional, online).

The hull is Matbench Discovery's ``PatchedPhaseDiagram`` of all MP entries
with MP2020-corrected DFT energies. It comes with the optional extra
``pip install aiida-adit[hull]`` (``matbench-discovery``), which downloads
and caches the file on first use. Nothing is downloaded at import time.

The file is a pickle, so it is checked before it is unpickled: its sha256 and md5
must equal :data:`PPD_SHA256` and :data:`PPD_MD5` (the md5 Matbench Discovery
publishes for ``mp/2023-02-07-ppd-mp.pkl.gz``, Figshare file 48241624; the
sha256 recorded independently for the same file). A mismatch stops with a
clear error and nothing is unpickled.

Energies predicted by CHGNet 0.3.0 (trained on MPtrj, whose energies carry
the MP2020 corrections) are compared with this hull as they are, the way
Matbench Discovery scores MPtrj-trained potentials.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path

from adit_torch.errors import ConfigError, DataFormatError
from adit_torch.stability.hull import ReferenceHull

NAME = "mp2023-02-07-ppd"
#: Digests of ``2023-02-07-ppd-mp.pkl.gz`` (Figshare file 48241624, about 220 MB).
PPD_SHA256 = "f7fc992230e88dcf26bab2e85fa1ed4fdf6b047c06479bfd8b7a1e003f242d1e"
PPD_MD5 = "60d19d691fa1d338aa496a40a9641bef"


def verify_ppd_file(path, sha256: str = PPD_SHA256, md5: str = PPD_MD5) -> Path:
    """Check the hull file's sha256 and md5 before anything unpickles it; returns the path.

    Raises :class:`DataFormatError` naming the file and both digests on a mismatch.
    """
    path = Path(path)
    h_sha, h_md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h_sha.update(chunk)
            h_md5.update(chunk)
    if h_sha.hexdigest() != sha256 or h_md5.hexdigest() != md5:
        raise DataFormatError(
            f"{path}: not the published MP 2023-02-07 hull file (sha256 {h_sha.hexdigest()}, expected {sha256}; "
            f"md5 {h_md5.hexdigest()}, expected {md5}); refusing to unpickle it. Delete it to download it again."
        )
    return path


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
    except Exception as exc:  # network errors come in many types  # noqa: BLE001
        raise ConfigError(
            f"could not obtain the MP 2023-02-07 hull through matbench-discovery ({type(exc).__name__}: {exc}); "
            "it needs network access once, then it is cached; offline, use --reference offline"
        ) from None
    verify_ppd_file(path)  # before unpickling: a pickle runs code
    try:
        with gzip.open(path, "rb") as fh:
            ppd = pickle.load(fh)  # verified above: the file Matbench Discovery publishes
    except Exception as exc:  # noqa: BLE001 - a pymatgen version that cannot rebuild the object
        raise ConfigError(
            f"could not read the verified MP 2023-02-07 hull {path} ({type(exc).__name__}: {exc}); "
            "offline, use --reference offline"
        ) from None
    return PatchedHull(ppd, NAME, {"source": str(path), "energy": "MP2020-corrected GGA/GGA+U (DFT)",
                                  "date": "2023-02-07"})
