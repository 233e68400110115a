"""``ReferenceHullData``: a reference convex hull (entries + energies) as a provenance node.

The node is a :class:`~aiida.orm.SinglefileData` holding a hull file that
:class:`adit_torch.stability.hull.ReferenceHull` reads (the shipped offline
CHGNet/MP-20 hull, a JSON list of ``ComputedEntry`` dicts or a
``formula,energy`` CSV). Its attributes say what it is without opening it:
``name``, ``num_entries``, ``elements`` (symbols with an elemental reference),
``potential`` (which energies it holds) and the file's ``sha256``, so every
energy above hull computed against it points at exactly one hull.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from aiida import orm

_LOADED: dict[str, object] = {}


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ReferenceHullData(orm.SinglefileData):
    """A reference hull file with its name, size, elements, potential and sha256 as attributes."""

    def set_file(self, file, filename=None, **kwargs):
        """Store ``file`` (a path) after checking that it reads as a reference hull; record its facts.

        :raises adit_torch.errors.DataFormatError: the file is not a readable hull.
        """
        from adit_torch.stability.hull import ReferenceHull

        if not isinstance(file, (str, os.PathLike)):
            raise TypeError("ReferenceHullData takes a file path")
        hull = ReferenceHull.from_file(file)
        super().set_file(file, filename=filename or Path(file).name, **kwargs)
        potential = hull.metadata.get("potential")
        self.base.attributes.set_many(
            {
                "name": hull.name,
                "num_entries": len(hull),
                "elements": sorted(hull.elements),
                "potential": potential.get("name") if isinstance(potential, dict) else potential,
                "sha256": _sha256(file),
            }
        )

    @property
    def name(self) -> str:
        """The hull's name (e.g. ``offline-mp20-chgnet``)."""
        return self.base.attributes.get("name")

    @property
    def sha256(self) -> str:
        """sha256 of the stored file."""
        return self.base.attributes.get("sha256")

    def load(self):
        """The :class:`adit_torch.stability.hull.ReferenceHull` of this node (read once per process)."""
        from adit_torch.stability.hull import ReferenceHull

        key = self.sha256
        if key not in _LOADED:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / self.filename
                with self.open(mode="rb") as src, open(path, "wb") as dst:
                    dst.write(src.read())
                _LOADED[key] = ReferenceHull.from_file(path)
        return _LOADED[key]

    @classmethod
    def get_or_create(cls, path: str | os.PathLike) -> ReferenceHullData:
        """The stored node holding the file at ``path`` (same sha256), or a new stored one."""
        digest = _sha256(path)
        query = orm.QueryBuilder().append(cls, filters={"attributes.sha256": digest})
        found = query.first(flat=True)
        if found is not None:
            return found
        return cls(file=os.fspath(path)).store()

    @classmethod
    def offline(cls) -> ReferenceHullData:
        """The offline CHGNet/MP-20 hull shipped with ``adit_torch``, stored once and reused."""
        from adit_torch.stability.hull import default_hull_path

        return cls.get_or_create(default_hull_path())
