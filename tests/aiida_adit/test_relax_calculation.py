"""``adit.relax``: the files and command line it writes, and the parser on a real run's outputs."""

import pathlib

import pytest
from aiida import orm

FOLDER = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "stability" / "aiida_relax"
OPTIONS = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}, "max_wallclock_seconds": 600}


def _structures():
    """The three crystals the fixture run was given (keys as in the run, real MP-20 cells)."""
    from adit_torch.io import read_systems

    table = {s.info["id"]: s for s in read_systems(FOLDER.parent / "mp20_small.csv")}
    limnir2, sm2mg = table["mp-1185360"].to_ase(), table["mp-972454"].to_ase()
    overlap = limnir2.copy()
    overlap.positions[1] = overlap.positions[0] + [0.1, 0.0, 0.0]
    return {
        "limnir2": orm.StructureData(ase=limnir2),
        "overlap": orm.StructureData(ase=overlap),
        "sm2mg": orm.StructureData(ase=sm2mg),
    }


def test_writes_sorted_structures_and_the_command_line(adit_code, generate_calc_job):
    from ase.io import read

    inputs = {
        "code": adit_code("adit.relax"),
        "structures": _structures(),
        "parameters": orm.Dict({"fmax": 0.02, "steps": 300, "fixed_cell": True}),
        "metadata": {"options": OPTIONS},
    }
    folder, calc_info = generate_calc_job("adit.relax", inputs)
    frames = read(folder / "input.extxyz", index=":", format="extxyz")
    assert [f.info["id"] for f in frames] == ["limnir2", "overlap", "sm2mg"]
    assert [len(f) for f in frames] == [4, 4, 6]
    assert calc_info.codes_info[0].cmdline_params == [
        "relax",
        "input.extxyz",
        "--out",
        "relaxed.extxyz",
        "--json",
        "relax.json",
        "--quiet",
        "--fmax",
        "0.02",
        "--steps",
        "300",
        "--fixed-cell",
    ]
    assert {"relaxed.extxyz", "relax.json"} <= set(calc_info.retrieve_list)


def test_rejects_unknown_parameters_and_molecules(adit_code, generate_calc_job):
    inputs = {
        "code": adit_code("adit.relax"),
        "structures": _structures(),
        "parameters": orm.Dict({"fmax": 0.05, "temperature": 300}),
        "metadata": {"options": OPTIONS},
    }
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['temperature'\\]"):
        generate_calc_job("adit.relax", inputs)
    molecule = orm.StructureData(cell=[[10, 0, 0], [0, 10, 0], [0, 0, 10]], pbc=(False, False, False))
    molecule.append_atom(position=(0, 0, 0), symbols="O")
    inputs = {"code": adit_code("adit.relax"), "structures": {"water": molecule}, "metadata": {"options": OPTIONS}}
    with pytest.raises(ValueError, match="`structures.water` is not periodic"):
        generate_calc_job("adit.relax", inputs)


def test_parser_maps_each_relaxed_structure_to_its_input(adit_code, generate_calc_job_node, parse_folder):
    structures = _structures()
    node = generate_calc_job_node(
        "adit.relax", {"code": adit_code("adit.relax"), "structures": structures}, folder=FOLDER
    )
    results, _ = parse_folder(node, "adit.relax")
    relaxed, energies = results["relaxed_structures"], results["energies"]
    assert sorted(relaxed) == sorted(energies) == ["limnir2", "sm2mg"]  # the overlapping one failed
    for key in relaxed:
        assert relaxed[key].base.extras.get("relaxed_from") == structures[key].uuid
        assert relaxed[key].get_formula() == structures[key].get_formula()
        assert relaxed[key].base.extras.get("converged") is True
        assert energies[key].value == pytest.approx(relaxed[key].base.extras.get("energy"))
    records = results["results"].get_dict()["structures"]
    assert records["overlap"]["status"] == "failed"
    assert "overlapping atoms" in records["overlap"]["reason"]
    assert records["limnir2"]["energy"] == pytest.approx(energies["limnir2"].value)
    assert results["results"]["counts"] == {"converged": 2, "unconverged": 0, "exploded": 0, "failed": 1}


def test_parser_exit_codes(adit_code, generate_calc_job_node, parse_folder, tmp_path):
    import shutil

    for name in ("relaxed.extxyz", "adit.out", "adit.err"):
        shutil.copy(FOLDER / name, tmp_path / name)
    (tmp_path / "_adit_exit_status").write_text("0\n")
    node = generate_calc_job_node(
        "adit.relax", {"code": adit_code("adit.relax"), "structures": _structures()}, folder=tmp_path
    )
    _, calc = parse_folder(node, "adit.relax")
    assert calc.exit_status == 300 and "relax.json" in calc.exit_message

    (tmp_path / "_adit_exit_status").write_text("6\n")
    (tmp_path / "adit.err").write_text("  failed: a: overlapping atoms\n")
    node = generate_calc_job_node(
        "adit.relax", {"code": adit_code("adit.relax"), "structures": _structures()}, folder=tmp_path
    )
    _, calc = parse_folder(node, "adit.relax")
    assert calc.exit_status == 420


def test_a_failed_relaxation_is_never_a_cache_source(aiida_profile_clean, adit_code):
    """Two identical real `adit relax` runs whose only crystal has overlapping atoms (status 6, 420): with
    caching on, the second runs again instead of copying the failure."""
    from aiida.engine import run_get_node
    from aiida.manage.caching import enable_caching
    from aiida.plugins import CalculationFactory

    inputs = {
        "code": adit_code("adit.relax"),
        "structures": {"overlap": _structures()["overlap"]},
        "parameters": orm.Dict({"steps": 5}),
        "metadata": {"options": OPTIONS},
    }
    with enable_caching(identifier="aiida.calculations:adit.relax"):
        _, first = run_get_node(CalculationFactory("adit.relax"), **inputs)
        _, second = run_get_node(CalculationFactory("adit.relax"), **inputs)
    assert first.exit_status == second.exit_status == 420, first.exit_message
    assert "overlapping atoms" in first.exit_message
    assert not first.base.caching.is_valid_cache
    assert not second.base.caching.is_created_from_cache


def test_parser_a_frame_without_its_energy_is_unreadable(adit_code, generate_calc_job_node, parse_folder, tmp_path):
    import shutil

    from ase.io import read, write

    for name in ("relax.json", "adit.out", "adit.err"):
        shutil.copy(FOLDER / name, tmp_path / name)
    frames = read(FOLDER / "relaxed.extxyz", index=":")
    del frames[1].info["total_energy"]
    write(tmp_path / "relaxed.extxyz", frames, format="extxyz")
    (tmp_path / "_adit_exit_status").write_text("0\n")
    node = generate_calc_job_node("adit.relax", {"code": adit_code("adit.relax"), "structures": _structures()},
                                  folder=tmp_path)
    results, calc = parse_folder(node, "adit.relax")
    assert calc.exit_status == 301
    assert "relaxed.extxyz" in calc.exit_message and "total_energy" in calc.exit_message
    assert frames[1].info["relaxed_from"] in calc.exit_message
