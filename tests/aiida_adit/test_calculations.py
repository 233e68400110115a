"""The adit CalcJobs: files written, command lines, copies, and validation before submission."""

import json

import numpy as np
import pytest
from aiida import orm

from aiida_adit.calculations.base import EXIT_STATUS_NAME
from aiida_adit.data.checkpoint import CheckpointData

OPTIONS = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}, "max_wallclock_seconds": 600}


def _ckpt(make_checkpoint, kind):
    return CheckpointData(file=str(make_checkpoint(kind=kind))).store()


def test_train_vae_command_and_settings_file(adit_code, generate_calc_job):
    settings = {"stage": "vae", "dataset": "mp20", "size": "XS", "max_steps": 5, "batch_size": 16, "lr": 1e-3}
    inputs = {"code": adit_code("adit.train"), "settings": orm.Dict(settings), "metadata": {"options": OPTIONS}}
    folder, calc_info = generate_calc_job("adit.train", inputs)

    written = json.loads((folder / "settings.json").read_text())
    assert written == {"train": {"batch_size": 16, "lr": 1e-3}}
    cmdline = calc_info.codes_info[0].cmdline_params
    assert cmdline == [
        "train-vae",
        "--dataset",
        "mp20",
        "--size",
        "XS",
        "--out-dir",
        "run",
        "--settings",
        "settings.json",
        "--max-steps",
        "5",
        "--max-minutes",
        "8",  # 600 s walltime less a 120 s margin to save the checkpoint
    ]
    assert "metrics.json" in " ".join(calc_info.retrieve_list)
    assert EXIT_STATUS_NAME in calc_info.retrieve_list
    assert calc_info.retrieve_temporary_list == ["run/vae.safetensors"]
    assert EXIT_STATUS_NAME in calc_info.append_text
    assert 'export ADIT_STATUS_FILE="$PWD/_adit_status"' in calc_info.prepend_text
    assert "_adit_status" in calc_info.retrieve_list and "_adit_status.rank*" in calc_info.retrieve_list


def test_train_dit_copies_the_vae_and_resumes_a_folder(adit_code, generate_calc_job, make_checkpoint, aiida_localhost):
    vae = _ckpt(make_checkpoint, "vae")
    dataset = orm.FolderData()
    dataset.base.repository.put_object_from_bytes(b"material_id,cif\n", "mp_20_pilot_train.csv")
    parent = orm.RemoteData(computer=aiida_localhost, remote_path="/scratch/previous")
    inputs = {
        "code": adit_code("adit.train"),
        "settings": orm.Dict({"stage": "dit", "dataset": "mp20", "device": "cuda"}),
        "parent_checkpoint": vae,
        "parent_folder": parent,
        "dataset": dataset,
        "metadata": {"options": OPTIONS},
    }
    _, calc_info = generate_calc_job("adit.train", inputs)
    cmdline = calc_info.codes_info[0].cmdline_params
    assert cmdline[0] == "train-dit"
    assert cmdline[cmdline.index("--vae") + 1] == "parent.safetensors"
    assert "--init" not in cmdline
    assert cmdline[-1] == "--resume"
    assert cmdline[cmdline.index("--device") + 1] == "cuda"
    assert (vae.uuid, vae.filename, "parent.safetensors") in calc_info.local_copy_list
    assert (dataset.uuid, None, "data") in calc_info.local_copy_list
    assert calc_info.remote_copy_list == [(aiida_localhost.uuid, "/scratch/previous/run", "run")]
    assert "ADIT_MP20_DIR" in calc_info.prepend_text


@pytest.mark.parametrize("stage", ["vae", "dit"])
def test_train_from_a_dit_parent_initialises_from_it(adit_code, generate_calc_job, make_checkpoint, stage):
    """A DiT parent (a pretrained model) fine-tunes its embedded VAE, or continues its DiT on that VAE's
    latents; the command lines are the ones `tests/adit_torch/test_cli_model.py` runs for real."""
    dit = _ckpt(make_checkpoint, "dit")
    inputs = {
        "code": adit_code("adit.train"),
        "settings": orm.Dict({"stage": stage, "dataset": "mp20"}),
        "parent_checkpoint": dit,
        "metadata": {"options": OPTIONS},
    }
    _, calc_info = generate_calc_job("adit.train", inputs)
    cmdline = calc_info.codes_info[0].cmdline_params
    assert cmdline[0] == f"train-{stage}"
    assert cmdline[cmdline.index("--init") + 1] == "parent.safetensors"
    assert ("--vae" in cmdline) is (stage == "dit")
    if stage == "dit":
        assert cmdline[cmdline.index("--vae") + 1] == "parent.safetensors"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"stage": "gan", "dataset": "mp20"}, "settings.stage"),
        ({"stage": "vae", "dataset": "oqmd"}, "settings.dataset"),
        ({"stage": "vae", "dataset": "mp20", "max_steps": -3}, "settings.max_steps"),
        ({"stage": "vae", "dataset": "mp20", "lr": 0.0}, "settings.lr"),
        ({"stage": "dit", "dataset": "qm9"}, "parent_checkpoint"),
    ],
)
def test_train_rejects_impossible_settings(adit_code, settings, message):
    from aiida.plugins import CalculationFactory

    inputs = {"code": adit_code("adit.train"), "settings": orm.Dict(settings)}
    with pytest.raises(ValueError, match=message):
        CalculationFactory("adit.train")(inputs=inputs)


def test_train_dit_rejects_nothing_but_a_checkpoint_node(adit_code):
    from aiida.plugins import CalculationFactory

    builder = CalculationFactory("adit.train").get_builder()
    with pytest.raises(ValueError, match="parent_checkpoint"):
        builder.parent_checkpoint = orm.SinglefileData.from_string("weights", "w.safetensors")


def test_sample_command_line_and_checkpoint_copy(adit_code, generate_calc_job, make_checkpoint):
    dit = _ckpt(make_checkpoint, "dit")
    inputs = {
        "code": adit_code(),
        "checkpoint": dit,
        "num_samples": orm.Int(8),
        "kind": orm.Str("molecule"),
        "seed": orm.Int(7),
        "metadata": {"options": OPTIONS},
    }
    _, calc_info = generate_calc_job("adit.sample", inputs)
    assert calc_info.codes_info[0].cmdline_params == [
        "sample",
        "--checkpoint",
        "model.safetensors",
        "--kind",
        "molecule",
        "--num-samples",
        "8",
        "--steps",
        "100",
        "--cfg-scale",
        "2.0",
        "--seed",
        "7",
        "--solver",
        "euler",
        "--time-grid",
        "uniform",
        "--out",
        "samples.extxyz",
    ]
    assert calc_info.local_copy_list == [(dit.uuid, dit.filename, "model.safetensors")]
    assert calc_info.retrieve_temporary_list == ["samples.extxyz"]
    # the batch size (which the restart work chain halves after 410) and the atom count are inputs too
    _, calc_info = generate_calc_job("adit.sample", {**inputs, "batch_size": orm.Int(32), "num_atoms": orm.Int(9),
                                                     "precision": orm.Str("bf16")})
    assert calc_info.codes_info[0].cmdline_params[-6:] == ["--batch-size", "32", "--num-atoms", "9",
                                                           "--precision", "bf16"]
    # conditions become --condition / --guidance items
    conditions = orm.Dict({"space_group": 225, "chemical_system": "Li-Fe-O", "guidance": {"space_group": 2.0}})
    _, calc_info = generate_calc_job("adit.sample", {**inputs, "kind": orm.Str("crystal"), "conditions": conditions})
    assert calc_info.codes_info[0].cmdline_params[-6:] == ["--condition", "space_group=225", "--condition",
                                                           "chemical_system=Li-Fe-O", "--guidance", "space_group=2.0"]
    # the space group's snap is on unless `symmetrize` is False
    assert "--no-symmetrize" not in calc_info.codes_info[0].cmdline_params
    _, calc_info = generate_calc_job("adit.sample", {**inputs, "kind": orm.Str("crystal"), "conditions": conditions,
                                                     "symmetrize": orm.Bool(False)})
    assert calc_info.codes_info[0].cmdline_params[-1] == "--no-symmetrize"
    # guidance in a limited interval of the flow
    _, calc_info = generate_calc_job("adit.sample", {**inputs, "solver": orm.Str("multistep"),
                                                     "guidance_interval": orm.List([0, 0.5])})
    params = calc_info.codes_info[0].cmdline_params
    assert params[-2:] == ["--guidance-interval", "0.0,0.5"] and params[params.index("--solver") + 1] == "multistep"


def test_sample_writes_the_fragment_to_keep(adit_code, generate_calc_job, make_checkpoint):
    """Inpainting through AiiDA: the fragment StructureData becomes `fragment.extxyz` and `--keep`; a
    molecule fragment is written without a cell, so `adit sample` reads it as a molecule."""
    from ase.build import bulk, molecule

    from adit_torch.io import read_systems
    from aiida_adit.structures import atoms_to_structure

    inputs = {"code": adit_code(), "checkpoint": _ckpt(make_checkpoint, "dit"), "num_samples": orm.Int(2),
              "kind": orm.Str("molecule"), "num_atoms": orm.Int(12), "metadata": {"options": OPTIONS},
              "fragment": atoms_to_structure(molecule("C6H6")[:6])}
    folder, calc_info = generate_calc_job("adit.sample", inputs)
    assert calc_info.codes_info[0].cmdline_params[-2:] == ["--keep", "fragment.extxyz"]
    (frag,) = read_systems(folder / "fragment.extxyz")
    assert not frag.is_periodic and frag.formula == "C6"
    from scipy.spatial.distance import pdist

    ring = molecule("C6H6")[:6]
    np.testing.assert_allclose(pdist(frag.positions), pdist(ring.positions), atol=1e-6)  # geometry kept

    crystal = {**inputs, "kind": orm.Str("crystal"), "fragment": atoms_to_structure(bulk("NaCl", "rocksalt", 5.6))}
    folder, calc_info = generate_calc_job("adit.sample", crystal)
    (frag,) = read_systems(folder / "fragment.extxyz")
    assert frag.is_periodic and sorted(frag.numbers) == [11, 17]
    assert "--keep-lattice" not in calc_info.codes_info[0].cmdline_params
    _, calc_info = generate_calc_job("adit.sample", {**crystal, "keep_lattice": orm.Bool(True)})
    assert calc_info.codes_info[0].cmdline_params[-3:] == ["--keep", "fragment.extxyz", "--keep-lattice"]
    assert "--no-exact-keep" not in calc_info.codes_info[0].cmdline_params
    _, calc_info = generate_calc_job("adit.sample", {**crystal, "exact_keep": orm.Bool(False)})
    assert calc_info.codes_info[0].cmdline_params[-3:] == ["--keep", "fragment.extxyz", "--no-exact-keep"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "crystal"}, "`fragment` is not periodic but `kind` is 'crystal'"),
        ({"num_atoms": 6}, "samples need more atoms than the fragment's 6"),
        ({"keep_lattice": True}, "`keep_lattice` keeps the lattice of a periodic `fragment`"),
        ({"exact_keep": False, "no_fragment": True}, "`exact_keep` is about the atoms of a `fragment`"),
    ],
)
def test_sample_rejects_a_fragment_that_cannot_fit(adit_code, make_checkpoint, changes, message):
    from aiida.plugins import CalculationFactory
    from ase.build import molecule

    from aiida_adit.structures import atoms_to_structure

    inputs = {"code": adit_code(), "checkpoint": _ckpt(make_checkpoint, "dit"), "num_samples": orm.Int(2),
              "kind": orm.Str(changes.get("kind", "molecule")), "num_atoms": orm.Int(changes.get("num_atoms", 12)),
              "fragment": atoms_to_structure(molecule("C6H6")[:6])}
    if "keep_lattice" in changes:
        inputs["keep_lattice"] = orm.Bool(changes["keep_lattice"])
    if "exact_keep" in changes:
        inputs["exact_keep"] = orm.Bool(changes["exact_keep"])
    if changes.get("no_fragment"):
        del inputs["fragment"]
    with pytest.raises(ValueError, match=message):
        CalculationFactory("adit.sample")(inputs=inputs)


@pytest.mark.parametrize(
    ("port", "value", "message"),
    [
        ("num_samples", lambda: orm.Int(-5), "positive number of samples"),
        ("kind", lambda: orm.Str("polymer"), "expected one of crystal, molecule"),
        ("steps", lambda: orm.Int(0), "positive number of integration steps"),
        ("cfg_scale", lambda: orm.Float(float("nan")), "finite number"),
        ("batch_size", lambda: orm.Int(0), "`batch_size` is 0; expected a positive integer"),
        ("solver", lambda: orm.Str("rk4"), "expected one of euler, heun, midpoint, multistep"),
        ("time_grid", lambda: orm.Str("cosine"), "expected one of uniform, power, reference"),
        ("num_atoms", lambda: orm.Int(-1), "`num_atoms` is -1; expected a positive integer"),
        ("precision", lambda: orm.Str("fp8"), "`precision` is 'fp8'; expected one of fp32, bf16"),
        ("checkpoint", None, "is of kind `vae`, expected `dit`"),
        ("conditions", lambda: orm.Dict({"space_group": 231}), "a space group is an international number 1..230"),
        ("conditions", lambda: orm.Dict({"bandgap": 1.5}), "unknown key 'bandgap'"),
        ("conditions", lambda: orm.Dict({"band_gap": "wide"}), "band_gap is a number in eV"),
        ("conditions", lambda: orm.Dict({"chemical_system": "Li-Qq"}), "not element symbols: Qq"),
        ("symmetrize", lambda: orm.Bool(False), "`symmetrize` applies to a `space_group` condition"),
        ("guidance_interval", lambda: orm.List([0.6, 0.2]), "0 <= lo <= hi <= 1, got \\(0.6, 0.2\\)"),
        ("guidance_interval", lambda: orm.List([0.5]), "expected two times"),
    ],
)
def test_sample_rejects_bad_input_before_submission(adit_code, make_checkpoint, port, value, message):
    from aiida.plugins import CalculationFactory

    inputs = {
        "code": adit_code(),
        "checkpoint": _ckpt(make_checkpoint, "dit"),
        "num_samples": orm.Int(4),
        "kind": orm.Str("crystal"),
    }
    inputs[port] = _ckpt(make_checkpoint, "vae") if value is None else value()
    with pytest.raises(ValueError, match=message):
        CalculationFactory("adit.sample")(inputs=inputs)


def test_sample_rejects_wrong_node_types(adit_code):
    from aiida.plugins import CalculationFactory

    builder = CalculationFactory("adit.sample").get_builder()
    with pytest.raises(ValueError, match="num_samples"):
        builder.num_samples = orm.Float(3.0)
    with pytest.raises(ValueError, match="checkpoint"):
        builder.checkpoint = orm.Str("dit.safetensors")


def test_evaluate_writes_structures_in_label_order(adit_code, generate_calc_job):
    from ase.build import bulk, molecule

    from aiida_adit.structures import atoms_to_structure, read_frames

    structures = {"b": atoms_to_structure(molecule("H2O")), "a": atoms_to_structure(molecule("CH4"))}
    inputs = {
        "code": adit_code("adit.evaluate"),
        "structures": structures,
        "kind": orm.Str("molecule"),
        "reference": orm.Str("qm9"),
        "parameters": orm.Dict({"workers": 1, "no_posebusters": True}),
        "metadata": {"options": OPTIONS},
    }
    folder, calc_info = generate_calc_job("adit.evaluate", inputs)
    frames = read_frames(folder / "input.extxyz")
    assert [f.get_chemical_formula() for f in frames] == ["CH4", "H2O"]
    assert not any(frames[0].pbc)
    assert calc_info.codes_info[0].cmdline_params == [
        "evaluate",
        "input.extxyz",
        "--kind",
        "molecule",
        "--json",
        "evaluation.json",
        "--reference",
        "qm9",
        "--no-posebusters",
        "--workers",
        "1",
    ]
    with pytest.raises(ValueError, match="not an `adit evaluate` option"):
        generate_calc_job("adit.evaluate", {**inputs, "parameters": orm.Dict({"threads": 2})})
    crystal = {"x": atoms_to_structure(bulk("NaCl", "rocksalt", a=5.64))}
    with pytest.raises(ValueError, match="not both"):
        generate_calc_job(
            "adit.evaluate",
            {**inputs, "structures": crystal, "samples": orm.SinglefileData.from_string("", "s.extxyz")},
        )
