"""Build the packaged novelty references: MP-20 training crystals as CIFs, QM9 training novelty keys.

The shipped joint model was trained on the training split of the workplace's partial MP-20
copy (9,421 crystals; see ``adit models show adit-xs-joint``). ``adit evaluate`` scores crystal
novelty against the MP-20 training split; where no MP-20 copy is found (a laptop with a fresh
install, no ``$ADIT_MP20_DIR``) it falls back to this packaged copy, so the main job measures
novelty against exactly the crystals the shipped model saw. The file holds ``material_id``
and ``cif`` (pymatgen's CifWriter, the package's own CIF output) per crystal, gzip-compressed,
written atomically. MP-20 rows come from the Materials Project (CC BY 4.0).

With ``--qm9`` it writes the novelty keys of the QM9 training split instead
(``adit_torch/resources/qm9_train_novelty_keys.json.gz``): the canonical SMILES without stereo
that the molecule evaluator's OpenBabel -> RDKit pipeline makes from each training molecule,
with the reference's digest and the RDKit, OpenBabel and pymatgen versions that made them. The
evaluator uses them only when both match (``adit_torch.evaluate.molecules.packaged_keys``);
rebuild after refreshing ``constraints.txt``.

Run: ``python scripts/build_novelty_reference.py`` (needs the workplace copy or
``$ADIT_MP20_DIR``); ``python scripts/build_novelty_reference.py --qm9 [--workers 2]``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
from pathlib import Path

from adit_torch.datasets import load_dataset
from adit_torch.evaluate.crystals import PACKAGED_REFERENCE
from adit_torch.io import _cif_text, atomic_write


def build_qm9_keys(out: Path, workers: int) -> None:
    """Write the QM9 training split's novelty keys, its digest and the library versions to ``out``."""
    from adit_torch.evaluate.molecules import pipeline_versions, reference_digest, reference_smiles

    systems = list(load_dataset("qm9", "train"))
    keys, _ = reference_smiles(systems, workers=workers, progress=True)
    payload = {"reference": "qm9:train", "num_molecules": len(systems), "digest": reference_digest(systems),
               "versions": pipeline_versions(), "keys": sorted(keys)}
    data = gzip.compress(json.dumps(payload, indent=0).encode("utf-8"), compresslevel=9, mtime=0)
    atomic_write(out, lambda tmp: tmp.write_bytes(data))
    print(f"wrote {len(keys)} keys of {len(systems)} molecules to {out} ({os.path.getsize(out) / 1e6:.2f} MB)")


def main() -> None:
    """Write the training split of MP-20 as ``material_id,cif`` rows (or, with ``--qm9``, QM9's keys)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="output file (default: the packaged resource)")
    p.add_argument("--qm9", action="store_true", help="build the QM9 training novelty keys instead")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    if args.qm9:
        from adit_torch.evaluate.molecules import PACKAGED_KEYS

        build_qm9_keys(args.out or PACKAGED_KEYS, args.workers)
        return
    args.out = args.out or PACKAGED_REFERENCE
    systems = load_dataset("mp20", "train")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["material_id", "cif"])
    for i in range(len(systems)):
        s = systems[i]
        writer.writerow([s.info.get("material_id", s.label), _cif_text(s)])
    data = gzip.compress(buffer.getvalue().encode("utf-8"), compresslevel=9, mtime=0)
    atomic_write(args.out, lambda tmp: tmp.write_bytes(data))
    print(f"wrote {len(systems)} crystals to {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
