"""``CheckpointData``: one ADiT ``.safetensors`` checkpoint as a provenance node.

The node is a :class:`~aiida.orm.SinglefileData` whose attributes repeat what
the checkpoint header says (kind, model size, training data, library version,
parameter count) plus the file's sha256, so checkpoints can be found with the
QueryBuilder without opening any file. Only the header is read (the JSON that
precedes the tensors in a safetensors file); no model is built and nothing is
unpickled, so the daemon never imports torch to store or inspect a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any

from aiida import orm

from adit_torch.datasets.cache import sha256_file
from adit_torch.errors import CheckpointError

#: The metadata key under which ``adit`` stores its JSON header (contracts, section 4).
METADATA_KEY = "adit"
#: Checkpoint kinds the ``adit`` command line writes.
KINDS = ("vae", "dit")
#: Largest header accepted (safetensors itself refuses headers above 100 MB).
_MAX_HEADER_BYTES = 100_000_000


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a safetensors header without loading any tensor.

    :param path: a ``.safetensors`` file.
    :returns: ``(adit_metadata, tensors)``: the decoded ``adit`` metadata object and the
        tensor table ``{name: {"dtype": str, "shape": [int, ...], "data_offsets": [a, b]}}``.
    :raises CheckpointError: the file is missing, truncated, not safetensors, or has no ``adit`` metadata.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                raise CheckpointError(f"checkpoint {path}: file is too short to be a safetensors file")
            (length,) = struct.unpack("<Q", prefix)
            if length <= 0 or length > _MAX_HEADER_BYTES:
                raise CheckpointError(f"checkpoint {path}: invalid safetensors header length {length}")
            raw = handle.read(length)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path}: file not found") from exc
    if len(raw) != length:
        raise CheckpointError(f"checkpoint {path}: header is truncated ({len(raw)} of {length} bytes)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path}: header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint {path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"checkpoint {path}: no '{METADATA_KEY}' metadata; not written by adit")
    try:
        adit = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path}: '{METADATA_KEY}' metadata is not valid JSON ({exc})") from exc
    if not isinstance(adit, dict) or adit.get("kind") not in KINDS:
        raise CheckpointError(
            f"checkpoint {path}: metadata 'kind' is {adit.get('kind') if isinstance(adit, dict) else adit!r}, "
            f"expected one of {', '.join(KINDS)}"
        )
    return adit, header


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes a :class:`CheckpointData` records for the checkpoint at ``path``.

    :returns: ``kind`` (vae|dit), ``size`` (registry name, e.g. XS), ``dataset`` (training
        data name or None), ``num_train`` (training systems, or None), ``library_version``,
        ``created`` (ISO time), ``num_parameters`` (int, counted from the tensor shapes;
        tensors of the embedded VAE of a DiT are counted apart in ``num_vae_parameters``) and ``sha256``.
    """
    adit, tensors = read_header(path)
    data = adit.get("data") or {}
    config = adit.get("config") or {}
    dataset = data.get("dataset") if isinstance(data, dict) else None
    num_train = data.get("num_train") if isinstance(data, dict) else None
    if dataset is None and isinstance(config, dict):
        dataset = config.get("dataset")
    own, vae = 0, 0
    for name, entry in tensors.items():
        count = math.prod(entry.get("shape", []))
        if adit["kind"] == "dit" and name.startswith("vae."):
            vae += count
        else:
            own += count
    return {
        "kind": adit["kind"],
        "size": adit.get("size"),
        "dataset": dataset,
        "num_train": num_train,
        "library_version": adit.get("library_version"),
        "created": adit.get("created"),
        "num_parameters": own,
        "num_vae_parameters": vae,
        "sha256": sha256_file(path),
    }


class CheckpointData(orm.SinglefileData):
    """An ADiT checkpoint file with its header facts as queryable attributes.

    Attributes: ``kind``, ``size``, ``dataset``, ``num_train``, ``library_version``, ``created``,
    ``num_parameters``, ``num_vae_parameters``, ``sha256`` (see :func:`describe`).
    """

    def set_file(self, file, filename=None, **kwargs):
        """Store ``file`` (a path or a binary stream) and record its header facts as attributes.

        :raises CheckpointError: the file is not an ADiT safetensors checkpoint.
        """
        super().set_file(file, filename=filename, **kwargs)
        if isinstance(file, (str, os.PathLike)):
            facts = describe(file)
        else:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, "checkpoint.safetensors")
                with self.open(mode="rb") as source, open(local, "wb") as target:
                    for chunk in iter(lambda: source.read(1 << 20), b""):
                        target.write(chunk)
                facts = describe(local)
        for key, value in facts.items():
            self.base.attributes.set(key, value)

    @property
    def kind(self) -> str:
        """``vae`` or ``dit``."""
        return self.base.attributes.get("kind")

    @property
    def size(self) -> str | None:
        """The model size name of the registry (``XS``, ``S``, ``B``, ``L``)."""
        return self.base.attributes.get("size")

    @property
    def sha256(self) -> str:
        """Hex sha256 of the file."""
        return self.base.attributes.get("sha256")

    @classmethod
    def find(cls, sha256: str) -> CheckpointData | None:
        """The oldest stored checkpoint with this sha256, or None."""
        query = orm.QueryBuilder().append(cls, filters={"attributes.sha256": sha256}, tag="ckpt")
        query.order_by({"ckpt": {"id": "asc"}}).limit(1)
        found = query.first(flat=True)
        return found

    @classmethod
    def from_pretrained(cls, name: str | None = None, download: bool = False) -> CheckpointData:
        """The stored node of a named pretrained model (see ``adit models``), created only if new.

        Deduplicated by sha256 like :meth:`get_or_create`, so every work chain that samples the same
        pretrained model points at one node; its label is the model name. ``download=True`` fetches a
        model that does not ship with the package (never needed for shipped ones).

        :param name: registry name; default: the shipped joint model.
        :raises CheckpointError: the model is unknown, missing or fails its sha256 check.
        """
        from adit_torch.errors import ConfigError
        from adit_torch.pretrained import DEFAULT_MODEL, pretrained_path

        name = name or DEFAULT_MODEL
        try:
            path = pretrained_path(name, download_missing=download)
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        node = cls.get_or_create(path, label=name)
        if not node.base.extras.get("pretrained", None):
            node.base.extras.set("pretrained", name)
        return node

    @classmethod
    def get_or_create(cls, path: str | os.PathLike, label: str | None = None) -> CheckpointData:
        """The stored checkpoint node for the file at ``path``, created and stored only if new.

        The file is identified by its sha256, so the same checkpoint imported twice gives the
        same node. Checkpoints produced by a training CalcJob are new nodes by construction
        (a node has one creator); their bytes are still kept once by the repository.

        :raises CheckpointError: ``path`` is missing or not an ADiT checkpoint.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint {path}: file not found")
        read_header(path)
        existing = cls.find(sha256_file(path))
        if existing is not None:
            return existing
        node = cls(file=os.path.abspath(path), filename=os.path.basename(path))
        if label:
            node.label = label
        return node.store()
