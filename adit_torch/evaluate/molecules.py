"""Molecule evaluation: validity (two conventions), uniqueness, novelty, EDM stability, PoseBusters.

* **validity (ADiT evaluator)**: the molecule is written as PDB by pymatgen
  through OpenBabel (bond perception: ``ConnectTheDots`` + ``PerceiveBondOrders``),
  read back with RDKit ``MolFromPDBBlock`` (sanitisation on, hydrogens kept:
  ``removeHs=False`` as the reference's configuration);
  valid when RDKit returns a molecule. Its SMILES is the canonical isomeric
  SMILES of the largest fragment.
* **strict validity**: RDKit ``rdDetermineBonds.DetermineBonds(mol, charge=0)``
  on the bare 3D atoms, then ``SanitizeMol``.
* **uniqueness** = distinct SMILES / valid; **novelty** = distinct SMILES not
  in the reference / valid (the ADiT evaluator's ``novel_rate``). The
  reference SMILES are made from the reference's 3D structures by the same
  pipeline (cached on disk), or canonicalised by RDKit when given as strings.
  Novelty compares SMILES *without stereo tags* (:func:`novelty_key`): the PDB
  pipeline assigns stereocentres from 3D while QM9's SMILES strings carry none,
  and a mirror image of a training molecule is not a new molecule.
* **stability**: :mod:`adit_torch.evaluate.stability_edm`.
* **PoseBusters**: :mod:`adit_torch.evaluate.posebusters` on the valid molecules.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adit_torch.evaluate.inputs import Unreadable, as_systems, degeneracy
from adit_torch.evaluate.stability_edm import MARGINS_PM, molecule_stability
from adit_torch.system import AtomicSystem

#: ``removeHs`` of RDKit's PDB reader on the ADiT route: False, as the reference evaluator's configuration
#: (``sampling.removeHs: false`` in its ``configs/diffusion_module/ldm.yaml``) passes it.
REMOVE_HS = False


def _quiet():
    from openbabel import openbabel
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    openbabel.obErrorLog.StopLogging()


def pdb_block(system: AtomicSystem) -> str:
    """PDB text of a molecule with OpenBabel's perceived bonds (through pymatgen, as the ADiT evaluator).

    ``Molecule.to(fmt="pdb")`` builds the same ``BabelMolAdaptor`` and writes it
    through a temporary file; writing the string directly gives the same text
    without the file system round trip.
    """
    from pymatgen.core import Molecule
    from pymatgen.io.babel import BabelMolAdaptor

    return BabelMolAdaptor(Molecule(system.numbers.tolist(), system.positions)).pybel_mol.write("pdb")


def largest_fragment_smiles(mol) -> str:
    """Canonical isomeric SMILES of the largest fragment (by atom count) of an RDKit molecule."""
    from rdkit import Chem

    fragments = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    largest = max(fragments, default=mol, key=lambda frag: frag.GetNumAtoms())
    return Chem.MolToSmiles(largest, isomericSmiles=True)


def validity_adit(system: AtomicSystem) -> tuple[str | None, str | None, str, int | None]:
    """ADiT-evaluator validity of one molecule.

    Returns:
        ``(smiles, pdb, reason, fragments)``: the largest fragment's canonical SMILES, the
        PDB text and the number of fragments (connected components of OpenBabel's bonds) when
        valid (``reason`` empty), else ``(None, pdb or None, reason, None)``. A molecule that
        falls apart is valid on this route: ``fragments > 1`` says so.
    """
    from rdkit import Chem

    _quiet()
    try:
        pdb = pdb_block(system)
    except Exception as exc:  # OpenBabel/pymatgen fail in many ways on broken geometries
        return None, None, f"OpenBabel PDB conversion failed ({type(exc).__name__})", None
    mol = Chem.MolFromPDBBlock(pdb, removeHs=REMOVE_HS)
    if mol is None:
        return None, pdb, "RDKit cannot read or sanitise the OpenBabel PDB", None
    try:
        return largest_fragment_smiles(mol), pdb, "", len(Chem.GetMolFrags(mol))
    except Exception as exc:  # noqa: BLE001 - RDKit raises its own error classes
        return None, pdb, f"RDKit SMILES failed ({type(exc).__name__})", None


def validity_strict(system: AtomicSystem) -> tuple[bool, str]:
    """Strict validity: ``DetermineBonds(charge=0)`` then sanitisation; returns ``(valid, reason)``.

    See :func:`strict_fragments` for the same route with the number of fragments.
    """
    valid, reason, _ = strict_fragments(system)
    return valid, reason


def strict_fragments(system: AtomicSystem) -> tuple[bool, str, int | None]:
    """Strict validity and connectivity: ``(valid, reason, fragments)``.

    ``fragments`` is the number of connected components of the bonds ``DetermineBonds``
    assigned (None when it failed); "valid and connected" is ``valid and fragments == 1``.
    """
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    _quiet()
    mol = system.to_rdkit()
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=0)
    except Exception as exc:  # noqa: BLE001
        return False, f"DetermineBonds(charge=0) failed: {str(exc).splitlines()[0][:120]}", None
    fragments = len(Chem.GetMolFrags(mol, sanitizeFrags=False))
    try:
        Chem.SanitizeMol(mol)
    except Exception as exc:  # noqa: BLE001
        return False, f"sanitisation after DetermineBonds failed: {str(exc).splitlines()[0][:120]}", fragments
    return True, "", fragments


def check_molecule(system: AtomicSystem | Unreadable) -> dict[str, Any]:
    """All per-molecule checks except PoseBusters.

    Returns:
        a record with ``id``, ``formula``, ``num_atoms``, ``valid`` (ADiT route),
        ``fragments`` (on the ADiT route; None when invalid), ``valid_strict``,
        ``valid_connected`` (strict route and one fragment: the headline), ``smiles``,
        ``stable_atoms``, ``molecule_stable``, ``reasons`` and, for valid molecules,
        ``pdb`` (removed from reports).
    """
    record: dict[str, Any] = {
        "id": system.info.get("id"), "formula": None, "num_atoms": 0, "valid": False, "fragments": None,
        "valid_strict": False, "valid_connected": False, "smiles": None, "stable_atoms": 0,
        "molecule_stable": False, "reasons": [],
    }
    if isinstance(system, Unreadable):
        record["reasons"].append(f"unreadable: {system.reason}")
        return record
    record["formula"], record["num_atoms"] = system.formula, system.num_atoms
    if system.lattice is not None:
        record["reasons"].append("not a molecule (has a lattice)")
        return record
    problem = degeneracy(system)
    if problem:
        record["reasons"].append(problem)
        return record
    smiles, pdb, reason, fragments = validity_adit(system)
    record["valid"], record["smiles"], record["fragments"] = smiles is not None, smiles, fragments
    if smiles is None:
        record["reasons"].append(f"invalid: {reason}")
    else:
        record["pdb"] = pdb
        if fragments > 1:
            record["reasons"].append(f"valid on the ADiT route but in {fragments} fragments")
    record["valid_strict"], reason, strict_parts = strict_fragments(system)
    record["valid_connected"] = record["valid_strict"] and strict_parts == 1
    if reason:
        record["reasons"].append(f"strictly invalid: {reason}")
    elif strict_parts > 1:
        record["reasons"].append(f"strictly valid but in {strict_parts} fragments")
    stable, _, mol_stable = molecule_stability(system)
    record["stable_atoms"], record["molecule_stable"] = stable, mol_stable
    if not mol_stable:
        record["reasons"].append(f"EDM-unstable atoms: {system.num_atoms - stable} of {system.num_atoms}")
    return record


def _map(func, items, workers: int, progress: bool, desc: str, chunksize: int = 32) -> list:
    from tqdm.auto import tqdm

    if workers <= 1 or len(items) < 128:
        return [func(x) for x in tqdm(items, desc=desc, disable=not progress, unit="mol")]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        return list(tqdm(pool.imap(func, items, chunksize=chunksize), total=len(items), desc=desc,
                         disable=not progress, unit="mol"))


# ---------------------------------------------------------------- reference
def _reference_key_of_system(system) -> str | None:
    if not isinstance(system, AtomicSystem) or degeneracy(system):
        return None
    return novelty_key(validity_adit(system)[0])


def canonical_smiles(smiles: str) -> str | None:
    """RDKit canonical isomeric SMILES (largest fragment) of a SMILES string; ``None`` when it does not parse."""
    from rdkit import Chem

    _quiet()
    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else largest_fragment_smiles(mol)


def novelty_key(smiles: str | None) -> str | None:
    """Canonical SMILES without stereo tags (largest fragment), the key novelty compares; ``None`` if unparseable."""
    from rdkit import Chem

    if not smiles:
        return None
    _quiet()
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    fragments = Chem.GetMolFrags(mol, asMols=True)
    largest = max(fragments, default=mol, key=lambda frag: frag.GetNumAtoms())
    return Chem.MolToSmiles(largest, isomericSmiles=False)


def _cache_dir() -> Path:
    return Path(os.environ.get("ADIT_CACHE_DIR", Path.home() / ".cache" / "aiida-adit")) / "evaluate"


#: Novelty keys of the QM9 training split made by :func:`reference_smiles`'s pipeline with the pinned
#: RDKit, OpenBabel and pymatgen (``constraints.txt``), shipped so that the first default molecule
#: evaluation on a machine need not run the pipeline over 100,000 molecules. Used only when the
#: reference's digest and the installed versions match the ones recorded in the file
#: (built by ``scripts/build_novelty_reference.py --qm9``).
PACKAGED_KEYS = Path(__file__).resolve().parents[1] / "resources" / "qm9_train_novelty_keys.json.gz"


def pipeline_versions() -> dict[str, str]:
    """Versions of the libraries whose output the novelty keys depend on (RDKit, OpenBabel, pymatgen)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name, dist in (("rdkit", "rdkit"), ("openbabel", "openbabel-wheel"), ("pymatgen", "pymatgen-core")):
        try:
            out[name] = version(dist)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def reference_digest(systems: Sequence[Any]) -> str:
    """24 hex digits identifying a molecule reference: atoms and positions (rounded to 1e-4 Å) and ``removeHs``."""
    digest = hashlib.sha256(f"removeHs={REMOVE_HS}".encode())
    for s in systems:
        if isinstance(s, AtomicSystem):
            digest.update(s.numbers.astype("<i8").tobytes())
            digest.update(np.round(s.positions, 4).astype("<f8").tobytes())
    return digest.hexdigest()[:24]


def packaged_keys(digest: str, path: Path | None = None) -> set[str] | None:
    """The packaged novelty keys when they were made from the reference ``digest`` by the installed
    library versions (:func:`pipeline_versions`); ``None`` otherwise (missing, other data, other versions)."""
    import gzip

    path = PACKAGED_KEYS if path is None else path
    try:
        data = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError):
        return None
    if data.get("digest") != digest or data.get("versions") != pipeline_versions():
        return None
    return set(data["keys"])


def reference_smiles(reference: Sequence[Any], workers: int = 1, progress: bool = False,
                     cache: bool = True) -> tuple[set[str], str]:
    """Reference novelty keys (:func:`novelty_key`) and how they were made.

    Args:
        reference: SMILES strings (canonicalised by RDKit) or molecules
            (``AtomicSystem`` etc., passed through the validity pipeline).
        workers: processes for the pipeline.
        progress: show a tqdm bar.
        cache: keep the result of a molecule reference on disk
            (``$ADIT_CACHE_DIR/evaluate``), keyed by :func:`reference_digest`.

    Returns:
        ``(keys, method)``. For molecules the keys come from the disk cache, else from the packaged
        QM9 training keys when they match (:func:`packaged_keys`), else from the pipeline.
    """
    items = list(reference)
    if items and all(isinstance(x, str) for x in items):
        keys = {k for k in (novelty_key(x) for x in items) if k}
        return keys, "RDKit canonical SMILES (no stereo) of the given strings"
    systems = as_systems(items)
    method = "OpenBabel PDB -> RDKit pipeline on the reference 3D structures, SMILES without stereo"
    digest = reference_digest(systems)
    path = _cache_dir() / f"reference_keys_{digest}.json"
    if cache and path.exists():
        try:
            return set(json.loads(path.read_text())), method
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    out = packaged_keys(digest)
    if out is not None:
        return out, method + f" (packaged keys made with {pipeline_versions()})"
    out = {s for s in _map(_reference_key_of_system, systems, workers, progress, "reference SMILES") if s}
    if cache:
        from adit_torch.evaluate.report import write_json

        write_json(path, sorted(out))  # type: ignore[arg-type]
    return out, method


def default_molecule_reference() -> tuple[list[AtomicSystem], str]:
    """The QM9 training split as the novelty reference, and its name."""
    from adit_torch.datasets import load_dataset

    return list(load_dataset("qm9", "train")), "qm9:train"


def evaluate_molecules(
    systems: Sequence[Any],
    reference: Sequence[Any] | set | bool | None = None,
    *,
    reference_name: str | None = None,
    posebusters: bool = True,
    posebusters_subset: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate generated molecules; every input is scored, in input order.

    Args:
        systems: ``AtomicSystem``, ASE ``Atoms``, pymatgen ``Molecule`` or RDKit ``Mol`` (with 3D coordinates).
        reference: novelty reference: molecules or SMILES strings (a list), a ``set`` of
            ready novelty keys (:func:`novelty_key`, as :func:`reference_smiles` returns them),
            ``None`` for the QM9 training split, ``False`` to skip novelty.
        reference_name: how to name the reference in the report.
        posebusters: run PoseBusters (config ``"mol"``) on the valid molecules.
        posebusters_subset: bust only a random subset of this many valid molecules
            (pass rates then come with 95% Wilson intervals).
        seed: seed of the subset draw.
        workers: processes (default: all cores).
        progress: show tqdm bars.

    Returns:
        the evaluation report (see :func:`adit_torch.evaluate.report.molecule_report`).
    """
    from adit_torch.evaluate.posebusters import run_posebusters
    from adit_torch.evaluate.report import fraction, molecule_report

    workers = workers or os.cpu_count() or 1
    items = as_systems(systems)
    records = _map(check_molecule, items, workers, progress, "validity/stability")
    n = len(records)
    valid = [i for i, r in enumerate(records) if r["valid"]]
    seen: set[str] = set()
    for i in valid:
        records[i]["first_occurrence"] = records[i]["smiles"] not in seen
        seen.add(records[i]["smiles"])
    ref_info = None
    novel_smiles: set[str] = set()
    if reference is not False:
        if reference is None:
            reference, default_name = default_molecule_reference()
            reference_name = reference_name or default_name
        if isinstance(reference, (set, frozenset)):  # ready novelty keys, e.g. from reference_smiles()
            ref_set, method = reference, "given set of novelty keys (canonical SMILES without stereo)"
        else:
            ref_set, method = reference_smiles(reference, workers, progress)
        novel_smiles = {smiles for smiles in seen if novelty_key(smiles) not in ref_set}
        for i in valid:
            records[i]["novel"] = records[i]["smiles"] in novel_smiles
        ref_info = {"name": reference_name or "user reference", "size": len(ref_set), "smiles": method}
    atoms = sum(r["num_atoms"] for r in records)
    stable_atoms = sum(r["stable_atoms"] for r in records)
    counts = {
        "structures": n, "valid": len(valid), "valid_strict": sum(r["valid_strict"] for r in records),
        "valid_connected": sum(r["valid_connected"] for r in records),
        "valid_one_fragment": sum(r["valid"] and r["fragments"] == 1 for r in records),
        "unique": len(seen), "novel": len(novel_smiles) if ref_info else None, "atoms": atoms,
        "stable_atoms": stable_atoms, "stable_molecules": sum(r["molecule_stable"] for r in records),
    }
    fractions = {
        "validity_connected": fraction(counts["valid_connected"], n),
        "validity": fraction(counts["valid"], n),
        "validity_one_fragment": fraction(counts["valid_one_fragment"], n),
        "validity_strict": fraction(counts["valid_strict"], n),
        "uniqueness": fraction(len(seen), len(valid)),
        "novelty": fraction(len(novel_smiles), len(valid)) if ref_info else None,
        "atom_stability": fraction(stable_atoms, atoms),
        "molecule_stability": fraction(counts["stable_molecules"], n),
    }
    pb = None
    if posebusters:
        pb = run_posebusters(records, valid, subset=posebusters_subset, seed=seed, workers=workers,
                             progress=progress)
    for r in records:
        r.pop("pdb", None)
    protocol = {
        "validity": "ADiT route (the reference's published number): pymatgen Molecule -> PDB via OpenBabel bond "
                    "perception -> RDKit MolFromPDBBlock (sanitize=True, "
                    f"removeHs={REMOVE_HS}); SMILES = canonical "
                    "isomeric SMILES of the largest fragment, so a molecule in fragments counts as valid",
        "validity_connected": "headline: strict validity (DetermineBonds(charge=0) + SanitizeMol) and the bonds "
                              "DetermineBonds assigned connect all atoms (one fragment)",
        "validity_one_fragment": "ADiT-route validity and OpenBabel's bonds connect all atoms (one fragment)",
        "validity_strict": "RDKit rdDetermineBonds.DetermineBonds(charge=0) + SanitizeMol",
        "uniqueness": "distinct SMILES / valid",
        "novelty": "distinct SMILES absent from the reference / valid (ADiT novel_rate); compared without "
                   "stereo tags",
        "stability": "EDM bond-length tables (pm) with margins "
                     f"{list(MARGINS_PM)} pm; allowed valences H1 C4 N3 O2 F1 (+ EDM's other elements)",
        "posebusters": "PoseBusters(config='mol') on the valid molecules (RDKit molecules from the PDB pipeline)",
    }
    return molecule_report(records, counts, fractions, protocol, ref_info, pb)
