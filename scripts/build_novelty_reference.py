"""Build the packaged crystal novelty reference: the partial MP-20 training split as a CSV of CIFs.

The shipped joint model was trained on the training split of the workplace's partial MP-20
copy (9,421 crystals; see ``adit models show adit-xs-joint``). ``adit evaluate`` scores crystal
novelty against the MP-20 training split; where no MP-20 copy is found (a laptop with a fresh
install, no ``$ADIT_MP20_DIR``) it falls back to this packaged copy, so the main job measures
novelty against exactly the crystals the shipped model saw. The file holds ``material_id``
and ``cif`` (pymatgen's CifWriter, the package's own CIF output) per crystal, gzip-compressed,
written atomically. MP-20 rows come from the Materials Project (CC BY 4.0).

Run: ``python scripts/build_novelty_reference.py`` (needs the workplace copy or
``$ADIT_MP20_DIR``).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
from pathlib import Path

from adit_torch.datasets import load_dataset
from adit_torch.evaluate.crystals import PACKAGED_REFERENCE
from adit_torch.io import _cif_text, atomic_write


def main() -> None:
    """Write the training split of MP-20 as ``material_id,cif`` rows to ``--out``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=PACKAGED_REFERENCE)
    args = p.parse_args()
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
