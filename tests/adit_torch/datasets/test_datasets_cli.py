"""``adit data info`` / ``adit data download`` and the MP-20 download checks (no network used)."""

import hashlib
import subprocess
from pathlib import Path

import pytest

from adit_torch.cli import EXIT_CODES, main
from adit_torch.datasets import download
from adit_torch.errors import DataFormatError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
REPO = Path(__file__).resolve().parents[3]


def test_info_table(tmp_path, capsys):
    status = main(["data", "info", "--mp20-dir", str(FIXTURES / "mp20"), "--qm9-dir", str(FIXTURES / "qm9"),
                   "--cache-dir", str(tmp_path)])
    assert status == 0
    out = capsys.readouterr().out.splitlines()
    rows = {tuple(line.split()[:2]): line.split() for line in out[2:]}
    assert set(rows) == ({(d, s) for d in ("mp20", "qm9") for s in ("train", "val", "test", "all")}
                         | {("qm9", "train_a"), ("qm9", "train_b")})  # the halves of EDM's property benchmark
    assert rows[("qm9", "all")][2:4] == ["30", "3-23"]  # water .. the largest fixture molecule
    assert rows[("qm9", "all")][-5:] == ["4", "H", "C", "N", "O"]
    split_total = sum(int(rows[("mp20", s)][2]) for s in ("train", "val", "test"))
    assert split_total == int(rows[("mp20", "all")][2]) == 22


def test_info_of_one_dataset_and_bad_input(tmp_path, capsys):
    assert main(["data", "info", "--dataset", "qm9", "--qm9-dir", str(FIXTURES / "qm9"),
                 "--cache-dir", str(tmp_path)]) == 0
    assert "mp20" not in capsys.readouterr().out
    status = main(["data", "info", "--dataset", "qm9", "--qm9-dir", str(tmp_path / "empty"),
                   "--cache-dir", str(tmp_path)])
    assert status == EXIT_CODES["bad_input"]
    assert "no qm9_part*.csv files" in capsys.readouterr().err


def test_git_blob_id_matches_git(tmp_path):
    path = FIXTURES / "mp20" / "mp_20_pilot_train.csv.gz"
    try:
        expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True,
                                  check=True, cwd=REPO).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    assert download.git_blob_id(path.read_bytes()) == expected


@pytest.fixture
def offline_mp20(monkeypatch):
    """Serve three fixture files as if they were the CDVAE files, with their blob ids recorded."""
    served = {s: (FIXTURES / "mp20" / f"mp_20_pilot_{s}.csv.gz").read_bytes() for s in ("train", "val", "test")}
    monkeypatch.setattr(download, "MP20_GIT_BLOBS", {s: download.git_blob_id(b) for s, b in served.items()})
    calls = []

    def fetch(url, timeout):
        calls.append(url)
        return served[url.rsplit("/", 1)[1][: -len(".csv")]]

    monkeypatch.setattr(download, "_fetch", fetch)
    return served, calls


def test_download_writes_verified_files(tmp_path, offline_mp20, capsys):
    served, calls = offline_mp20
    assert main(["data", "download", "mp20", "--dest", str(tmp_path / "mp20")]) == 0
    assert all(download.CDVAE_COMMIT in url for url in calls) and len(calls) == 3
    for split, data in served.items():
        assert (tmp_path / "mp20" / f"{split}.csv").read_bytes() == data
    sums = (tmp_path / "mp20" / "SHA256SUMS").read_text().splitlines()
    assert sums[0] == f"{hashlib.sha256(served['train']).hexdigest()}  train.csv"
    assert sorted(p.name for p in (tmp_path / "mp20").iterdir()) == ["SHA256SUMS", "test.csv", "train.csv", "val.csv"]
    main(["data", "download", "mp20", "--dest", str(tmp_path / "mp20")])  # present files are re-verified, not fetched
    assert len(calls) == 3


def test_download_rejects_wrong_bytes(tmp_path, offline_mp20, monkeypatch, capsys):
    monkeypatch.setattr(download, "MP20_GIT_BLOBS", dict(download.MP20_GIT_BLOBS, val="0" * 40))
    status = main(["data", "download", "mp20", "--dest", str(tmp_path)])
    assert status == EXIT_CODES["bad_input"]
    assert "val.csv: git blob id" in capsys.readouterr().err
    assert not (tmp_path / "val.csv").exists()  # nothing unverified is left behind
    with pytest.raises(DataFormatError, match="git-lfs pointer"):
        download.verify("train", b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
