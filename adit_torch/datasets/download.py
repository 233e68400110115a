"""Download the full MP-20 (CDVAE's ``data/mp_20/{train,val,test}.csv``) for users who are online.

Never called at import time or by the tests; run ``adit data download mp20 --dest DIR``
and then point ``$ADIT_MP20_DIR`` at ``DIR``.

Integrity: the files are fetched from a pinned commit of the CDVAE repository
and checked against the git blob ids that commit records for them (a git blob
id is the SHA-1 of ``b"blob <size>\\0" + content``, so it checks every byte).
Their sha256 values could not be computed where this module was written (no
copy of the files there): they are listed as unverified (``None``), and the
sha256 of what was downloaded is written to ``DIR/SHA256SUMS`` so later runs
can be compared against it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from pathlib import Path

from adit_torch.errors import DataFormatError
from adit_torch.io import atomic_write

LOGGER = logging.getLogger(__name__)

#: CDVAE commit the URLs are pinned to (txie-93/cdvae, 2022-04-20).
CDVAE_COMMIT = "f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea"
MP20_URL = "https://raw.githubusercontent.com/txie-93/cdvae/{commit}/data/mp_20/{split}.csv"
#: git blob ids of the three files at :data:`CDVAE_COMMIT` (read from the repository tree).
MP20_GIT_BLOBS = {
    "train": "b1c9d498565ac2fd8d075a51ff2ef5e51ba6c21f",
    "val": "7efe4d7ebeb4f460ceaad35e5326c42111d9c9a1",
    "test": "5dc643041df53f5ce4970a79930ad262b4f07acd",
}
#: The sha256 checksums of the three files, unverified here (see the module docstring).
MP20_SHA256: dict[str, str | None] = {"train": None, "val": None, "test": None}


def git_blob_id(data: bytes) -> str:
    """The git blob id (hex SHA-1 of ``b"blob <len>\\0" + data``) of a file's bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except OSError as exc:
        raise DataFormatError(f"download of {url} failed: {exc}") from None


def verify(split: str, data: bytes) -> str:
    """Check downloaded bytes of ``split`` against the recorded blob id (and sha256 when known); returns sha256."""
    if data.startswith(b"version https://git-lfs"):
        raise DataFormatError(f"MP-20 {split}.csv: got a git-lfs pointer instead of the data")
    blob = git_blob_id(data)
    if blob != MP20_GIT_BLOBS[split]:
        raise DataFormatError(f"MP-20 {split}.csv: git blob id {blob} != expected {MP20_GIT_BLOBS[split]}")
    sha = hashlib.sha256(data).hexdigest()
    expected = MP20_SHA256.get(split)
    if expected is not None and sha != expected:
        raise DataFormatError(f"MP-20 {split}.csv: sha256 {sha} != expected {expected}")
    return sha


def download_mp20(dest: str | os.PathLike, force: bool = False, timeout: float = 120.0) -> list[Path]:
    """Download ``train.csv``, ``val.csv`` and ``test.csv`` of MP-20 into ``dest``; returns their paths.

    Existing files are kept (and re-verified) unless ``force``. Each file is
    verified before it is renamed into place, so ``dest`` never holds a partial file.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths, sums = [], []
    for split in ("train", "val", "test"):
        path = dest / f"{split}.csv"
        if path.exists() and not force:
            sha = verify(split, path.read_bytes())
            LOGGER.info("%s present and verified", path)
        else:
            url = MP20_URL.format(commit=CDVAE_COMMIT, split=split)
            LOGGER.info("downloading %s", url)
            data = _fetch(url, timeout)
            sha = verify(split, data)
            atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))
        paths.append(path)
        sums.append(f"{sha}  {path.name}\n")
    atomic_write(dest / "SHA256SUMS", lambda tmp: tmp.write_text("".join(sums)))
    return paths
