"""benchmarks/gpu_train.py: the pack rebuilds the training set, and export + assemble give the model back."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def gpu_train():
    spec = importlib.util.spec_from_file_location("gpu_train", ROOT / "benchmarks" / "gpu_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pack_gives_the_training_set_of_the_training_commands(gpu_train, tmp_path, monkeypatch):
    from adit_torch.recipes import load_training_data

    monkeypatch.setenv("ADIT_MP20_DIR", str(FIXTURES / "mp20"))
    monkeypatch.setenv("ADIT_QM9_DIR", str(FIXTURES / "qm9"))
    monkeypatch.setenv("ADIT_CACHE_DIR", str(tmp_path / "cache"))
    gpu_train.pack(tmp_path / "pack.npz")
    packed = gpu_train.load_pack(tmp_path / "pack.npz", crystal_repeat=3)
    direct = load_training_data("joint", "train", crystal_repeat=3)
    assert len(packed) == len(direct) and len(packed.parts) == len(direct.parts) == 4
    np.testing.assert_array_equal(packed.num_atoms, direct.num_atoms)
    np.testing.assert_array_equal(packed.periodic, direct.periodic)
    for a, b in zip(packed.parts, direct.parts, strict=True):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-5)  # QM9 packed as float32
        assert a.positions.dtype == np.float64
        np.testing.assert_array_equal(a.props.get("spacegroup", []), b.props.get("spacegroup", []))


def test_export_in_parts_and_assemble_give_the_model_back_in_float16(gpu_train, tmp_path):
    from adit_torch.checkpoint import load_dit, read_metadata

    model = FIXTURES / "checkpoints" / "tiny_dit.safetensors"
    files = gpu_train.export(model, tmp_path / "parts", chunk_bytes=20_000)
    assert len(files) > 1 and (tmp_path / "parts" / "header.json").is_file()
    assert all(f.stat().st_size < 20_000 + 4_096 for f in files)  # tensor bytes plus the safetensors header
    out = gpu_train.assemble(tmp_path / "parts", tmp_path / "back.safetensors", vae_from=model)
    dit, vae, _, meta = load_dit(out)
    dit0, vae0, _, meta0 = load_dit(model)
    assert meta["data"] == meta0["data"] and read_metadata(out)["weights_dtype"] == "float16"
    for (name, a), b in zip(dit.state_dict().items(), dit0.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3, msg=name)
    for a, b in zip(vae.state_dict().values(), vae0.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the VAE comes back exact, from the base model
