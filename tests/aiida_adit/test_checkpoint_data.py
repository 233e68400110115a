"""CheckpointData: header facts as attributes, one node per file content, clear errors."""

import hashlib

import pytest

from adit_torch.errors import CheckpointError
from aiida_adit.data.checkpoint import CheckpointData, describe, read_header


def test_attributes_come_from_the_header(make_checkpoint):
    path = make_checkpoint(kind="dit", size="XS", dataset="joint")
    node = CheckpointData(file=str(path))
    assert node.kind == "dit"
    assert node.size == "XS"
    assert node.base.attributes.get("dataset") == "joint"
    assert node.base.attributes.get("library_version") == "0.1.0"
    # 4 x 3 model weights; the 2 x 5 VAE block of a DiT is counted apart
    assert node.base.attributes.get("num_parameters") == 12
    assert node.base.attributes.get("num_vae_parameters") == 10
    assert node.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_stream_and_path_give_the_same_attributes(make_checkpoint):
    path = make_checkpoint(kind="vae")
    with open(path, "rb") as handle:
        from_stream = CheckpointData(file=handle, filename="vae.safetensors")
    assert from_stream.base.attributes.all == CheckpointData(file=str(path)).base.attributes.all | {
        "filename": "vae.safetensors"
    }


def test_get_or_create_stores_each_file_once(make_checkpoint):
    first_path = make_checkpoint(kind="vae", seed=1, name="a.safetensors")
    copy_path = first_path.with_name("copy.safetensors")
    copy_path.write_bytes(first_path.read_bytes())
    other_path = make_checkpoint(kind="vae", seed=2, name="b.safetensors")

    first = CheckpointData.get_or_create(first_path)
    assert first.is_stored
    assert CheckpointData.get_or_create(copy_path).pk == first.pk
    assert CheckpointData.get_or_create(other_path).pk != first.pk


def test_non_checkpoints_are_rejected_with_the_file_named(tmp_path, make_checkpoint):
    text = tmp_path / "notes.safetensors"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.safetensors"):
        CheckpointData(file=str(text))
    with pytest.raises(CheckpointError, match="file not found"):
        CheckpointData.get_or_create(tmp_path / "missing.safetensors")

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(make_checkpoint(kind="vae").read_bytes()[:20])
    with pytest.raises(CheckpointError, match="truncated"):
        read_header(truncated)


def test_header_without_adit_metadata_is_rejected(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="no 'adit' metadata"):
        describe(path)
