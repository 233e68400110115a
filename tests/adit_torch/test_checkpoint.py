"""Checkpoints: round trip, header-only metadata, clear errors for missing / corrupt / wrong-kind files."""

import json
import struct

import pytest
import torch
from adit_model_data import mp20_systems

from adit_torch.batching import collate
from adit_torch.checkpoint import load_dit, load_tensors, load_vae, read_metadata, save_checkpoint
from adit_torch.config import DiTConfig, FlowConfig, VAEConfig, to_dict
from adit_torch.dit import Condition, DiT
from adit_torch.errors import CheckpointError
from adit_torch.vae import VAE

VCFG = VAEConfig(d_model=32, num_layers=1, num_heads=4)
DCFG = DiTConfig(d_model=32, num_layers=1, num_heads=4)


def _save_vae(path):
    torch.manual_seed(0)
    vae = VAE(VCFG)
    save_checkpoint(path, "vae", "XS", {"vae": to_dict(VCFG)}, vae.state_dict(),
                    {"num_atoms_hist": {"crystal": {"4": 2}}})
    return vae


def _save_dit(path, vae):
    torch.manual_seed(1)
    dit = DiT(DCFG)
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.05)
    tensors = {**dit.state_dict(), **{f"vae.{k}": v for k, v in vae.state_dict().items()}}
    save_checkpoint(path, "dit", "XS", {"dit": to_dict(DCFG), "vae": to_dict(VCFG), "flow": to_dict(FlowConfig())},
                    tensors, {"latent_mean": [0.0] * 8})
    return dit


def test_vae_round_trip_rebuilds_identical_model(tmp_path):
    vae = _save_vae(tmp_path / "vae.safetensors").eval()
    loaded, meta = load_vae(tmp_path / "vae.safetensors")
    assert meta["kind"] == "vae" and meta["size"] == "XS" and meta["library_version"]
    assert loaded.cfg == VCFG
    b = collate(mp20_systems(2))
    torch.testing.assert_close(loaded.encode(b)[0], vae.encode(b)[0], atol=0, rtol=0)


def test_dit_embeds_its_vae(tmp_path):
    vae = _save_vae(tmp_path / "vae.safetensors")
    dit = _save_dit(tmp_path / "dit.safetensors", vae).eval()
    d2, v2, flow, meta = load_dit(tmp_path / "dit.safetensors")
    assert meta["kind"] == "dit" and flow == FlowConfig() and d2.cfg == DCFG
    for k, v in vae.state_dict().items():
        assert torch.equal(v2.state_dict()[k], v)
    x, t, m = torch.randn(2, 3, 8), torch.rand(2), torch.ones(2, 3, dtype=torch.bool)
    c = Condition(periodic=torch.tensor([0, 1]))
    torch.testing.assert_close(d2(x, t, m, c), dit(x, t, m, c), atol=0, rtol=0)
    # the VAE loader also accepts a DiT checkpoint (it reads the vae. prefix)
    v3, _ = load_vae(tmp_path / "dit.safetensors")
    assert v3.cfg == VCFG


def test_read_metadata_reads_only_the_header(tmp_path):
    p = tmp_path / "vae.safetensors"
    _save_vae(p)
    meta = read_metadata(p)
    assert meta["config"]["vae"]["d_model"] == 32
    assert meta["data"]["num_atoms_hist"] == {"crystal": {"4": 2}}
    # truncating the tensor data leaves the header readable but the weights unloadable
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[: 8 + n + 10])
    assert read_metadata(cut)["kind"] == "vae"
    with pytest.raises(CheckpointError, match="corrupt"):
        load_vae(cut)


def test_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_metadata(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="corrupt"):
        read_metadata(junk)
    junk.write_text("this is not a checkpoint at all, just text")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_metadata(junk)
    vae_path = tmp_path / "vae.safetensors"
    _save_vae(vae_path)
    with pytest.raises(CheckpointError, match="vae checkpoint, but a dit"):
        load_dit(vae_path)
    # a header whose config does not fit the weights
    meta, tensors = load_tensors(vae_path)
    cfg = {"vae": {**meta["config"]["vae"], "d_model": 64}}
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(bad, "vae", "XS", cfg, tensors)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_vae(bad)
    with pytest.raises(CheckpointError):
        save_checkpoint(bad, "other", "XS", {}, tensors)


def test_writes_are_atomic(tmp_path):
    p = tmp_path / "vae.safetensors"
    _save_vae(p)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["vae.safetensors"]
    header = json.loads(p.read_bytes()[8:8 + struct.unpack("<Q", p.read_bytes()[:8])[0]])
    assert "adit" in header["__metadata__"]


def test_half_precision_export_keeps_the_vae_and_loads_into_float32(tmp_path):
    from adit_torch.checkpoint import export_half

    vae = _save_vae(tmp_path / "vae.safetensors")
    dit = _save_dit(tmp_path / "dit.safetensors", vae)
    export_half(tmp_path / "dit.safetensors", tmp_path / "half.safetensors")
    meta, tensors = load_tensors(tmp_path / "half.safetensors")
    assert meta["weights_dtype"] == "float16" and meta["kind"] == "dit"
    assert all(v.dtype == torch.float32 for k, v in tensors.items() if k.startswith("vae."))
    assert all(v.dtype == torch.float16 for k, v in tensors.items() if not k.startswith("vae."))
    assert (tmp_path / "half.safetensors").stat().st_size < (tmp_path / "dit.safetensors").stat().st_size
    half, half_vae, _, _ = load_dit(tmp_path / "half.safetensors")
    assert all(p.dtype == torch.float32 for p in half.parameters())
    assert all(torch.equal(a, b) for a, b in zip(half_vae.state_dict().values(), vae.state_dict().values()))
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 5, dtype=torch.bool)
    cond = Condition(periodic=torch.tensor([0, 1]))
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        ref, out = dit.eval()(x, t, mask, cond), half(x, t, mask, cond)
    assert not torch.equal(ref, out)  # it is a different, rounded model ...
    torch.testing.assert_close(out, ref, atol=5e-3, rtol=5e-3)  # ... within float16's rounding
    with pytest.raises(CheckpointError, match="not a model checkpoint"):
        state = tmp_path / "state.safetensors"
        from adit_torch.checkpoint import _atomic_save

        _atomic_save(state, {"x": torch.zeros(1)}, {"kind": "state"})
        export_half(state, tmp_path / "no.safetensors")
