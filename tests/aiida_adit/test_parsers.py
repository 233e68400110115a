"""The adit parsers on real output folders (tests/fixtures/aiida, made by make_fixtures.py)."""

import json
import shutil

import numpy as np
import pytest
from aiida import orm
from ase.io import read, write

from aiida_adit.data.checkpoint import CheckpointData, describe


def _parse(generate_calc_job_node, parse_folder, fixture_folder, tmp_path, entry_point, case, inputs, options=None):
    folder = fixture_folder(case)
    node = generate_calc_job_node(entry_point, inputs, folder / "retrieved", options=options)
    temporary = folder / "temporary" if (folder / "temporary").is_dir() else None
    return parse_folder(node, entry_point, temporary=temporary, tmp_dir=tmp_path)


def _train(stage):
    return {"settings": orm.Dict({"stage": stage, "dataset": "joint", "size": "XS"})}


@pytest.fixture
def dit_checkpoint(fixture_folder):
    """The DiT checkpoint of the train_dit fixture, as a stored node."""
    return CheckpointData.get_or_create(fixture_folder("train_dit", "temporary") / "dit.safetensors")


@pytest.fixture
def parse(generate_calc_job_node, parse_folder, fixture_folder, tmp_path):
    def factory(entry_point, case, inputs, options=None):
        return _parse(
            generate_calc_job_node, parse_folder, fixture_folder, tmp_path, entry_point, case, inputs, options
        )

    return factory


def test_train_vae_outputs(parse, fixture_folder):
    results, calcfunction = parse("adit.train", "train_vae", _train("vae"))
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    checkpoint_file = fixture_folder("train_vae", "temporary") / "vae.safetensors"
    assert results["checkpoint"].base.attributes.get("sha256") == describe(checkpoint_file)["sha256"]
    assert results["checkpoint"].kind == "vae"
    metrics = json.loads((fixture_folder("train_vae", "retrieved") / "metrics.json").read_text())
    assert results["metrics"]["status"] == "completed"
    assert results["metrics"]["step"] == metrics["step"] == 6
    log = np.genfromtxt(fixture_folder("train_vae", "retrieved") / "log.csv", delimiter=",", names=True)
    curves = results["curves"]
    np.testing.assert_allclose(curves.get_array("step"), log["step"])
    np.testing.assert_allclose(curves.get_array("loss"), log["loss"], equal_nan=True)


def test_train_dit_outputs_a_dit(parse):
    results, calcfunction = parse("adit.train", "train_dit", _train("dit"))
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    assert results["checkpoint"].kind == "dit"
    assert results["checkpoint"].base.attributes.get("num_vae_parameters") > 0


def test_train_stage_mismatch_is_a_corrupt_checkpoint(parse):
    _, calcfunction = parse("adit.train", "train_dit", {"settings": orm.Dict({"stage": "vae", "dataset": "joint"})})
    assert calcfunction.exit_status == 300  # no vae.safetensors among the fetched files


def test_train_time_limit_saves_and_asks_to_resume(parse):
    results, calcfunction = parse("adit.train", "train_time_limit", _train("vae"))
    assert calcfunction.exit_status == 400
    assert results["metrics"]["status"] == "time_limit"
    assert results["checkpoint"].kind == "vae"


def test_train_killed_by_the_scheduler_is_walltime(parse):
    results, calcfunction = parse("adit.train", "train_killed", _train("vae"))
    assert calcfunction.exit_status == 400
    assert "checkpoint" not in results
    assert len(results["curves"].get_array("step")) > 0


def test_scheduler_out_of_memory_message_wins(parse, fixture_folder, tmp_path, generate_calc_job_node, parse_folder):
    folder = tmp_path / "killed"
    shutil.copytree(fixture_folder("train_killed", "retrieved"), folder)
    (folder / "_scheduler-stderr.txt").write_text(
        "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=42.batch\n"
    )
    node = generate_calc_job_node("adit.train", _train("vae"), folder)
    _, calcfunction = parse_folder(node, "adit.train")
    assert calcfunction.exit_status == 410


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"_adit_status": "4\n", "_adit_exit_status": "0\n"}, 420),  # $? after a user's append_text command
        ({"_adit_status": "0\n", "_adit_status.rank1": "5\n", "_adit_status.rank2": "4\n"}, 410),  # torchrun
        ({"_adit_exit_status": "4\n"}, 420),  # no status from adit itself: the shell's $? is the fallback
    ],
)
def test_adits_own_status_file_wins(fixture_folder, tmp_path, generate_calc_job_node, parse_folder, files, expected):
    folder = tmp_path / "run"
    shutil.copytree(fixture_folder("train_nan", "retrieved"), folder)
    (folder / "_adit_exit_status").unlink()
    for name, text in files.items():
        (folder / name).write_text(text)
    node = generate_calc_job_node("adit.train", _train("vae"), folder)
    _, calcfunction = parse_folder(node, "adit.train")
    assert calcfunction.exit_status == expected


def test_train_nan_loss(parse):
    _, calcfunction = parse("adit.train", "train_nan", _train("vae"))
    assert calcfunction.exit_status == 420
    assert "non-finite loss" in calcfunction.exit_message


def test_train_bad_input_names_the_setting(parse):
    _, calcfunction = parse("adit.train", "train_bad_input", _train("vae"))
    assert calcfunction.exit_status == 302
    assert "batch_sise" in calcfunction.exit_message


def _sample_inputs(checkpoint, kind, count):
    return {"checkpoint": checkpoint, "kind": orm.Str(kind), "num_samples": orm.Int(count)}


def test_sample_molecules(parse, fixture_folder, dit_checkpoint):
    results, calcfunction = parse("adit.sample", "sample_molecule", _sample_inputs(dit_checkpoint, "molecule", 4))
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    frames = read(fixture_folder("sample_molecule", "temporary") / "samples.extxyz", index=":")
    structures = results["structures"]
    assert sorted(structures) == [f"sample_{i:05d}" for i in range(len(frames))]
    for index, atoms in enumerate(frames):
        node = structures[f"sample_{index:05d}"]
        assert node.pbc == (False, False, False)
        assert node.get_ase().get_chemical_symbols() == atoms.get_chemical_symbols()
        # same geometry up to the shift into the box, and the box encloses the molecule with room to spare
        shifted = node.get_ase().get_positions() - atoms.get_positions()
        np.testing.assert_allclose(shifted, np.broadcast_to(shifted[0], shifted.shape), atol=1e-8)
        positions, box = node.get_ase().get_positions(), np.diag(node.cell)
        assert (positions >= 4.99).all() and (positions <= box - 4.99).all()
    assert results["summary"]["num_written"] == results["summary"]["num_stored"] == 4
    assert results["samples"].get_content().count("Properties=") == 4


def test_sample_crystals_keep_their_lattice(parse, fixture_folder, dit_checkpoint):
    results, calcfunction = parse("adit.sample", "sample_crystal", _sample_inputs(dit_checkpoint, "crystal", 3))
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    frames = read(fixture_folder("sample_crystal", "temporary") / "samples.extxyz", index=":")
    for index, atoms in enumerate(frames):
        node = results["structures"][f"sample_{index:05d}"]
        assert node.pbc == (True, True, True)
        np.testing.assert_allclose(node.cell, atoms.cell[:])
        np.testing.assert_allclose(node.get_ase().get_positions(), atoms.get_positions())


def test_sample_fewer_than_asked_keeps_what_came_out(parse, dit_checkpoint):
    results, calcfunction = parse("adit.sample", "sample_molecule", _sample_inputs(dit_checkpoint, "molecule", 10))
    assert calcfunction.exit_status == 500
    assert "4 of the 10" in calcfunction.exit_message
    assert len(results["structures"]) == 4


def test_sample_partial_run_without_its_summary_still_has_a_summary(
    tmp_path, fixture_folder, generate_calc_job_node, parse_folder, dit_checkpoint
):
    """A partial run (status 6) whose summary file is missing: `summary` is a required output of the
    CalcJob and of adit.sample, which keeps such a run, so the parser gives the counts it knows."""
    folder = tmp_path / "retrieved"
    shutil.copytree(fixture_folder("sample_molecule", "retrieved"), folder)
    (folder / "samples.summary.json").unlink()
    (folder / "_adit_exit_status").write_text("6\n")
    node = generate_calc_job_node("adit.sample", _sample_inputs(dit_checkpoint, "molecule", 10), folder)
    results, calcfunction = parse_folder(node, "adit.sample", temporary=fixture_folder("sample_molecule", "temporary"),
                                         tmp_dir=tmp_path)
    assert calcfunction.exit_status == 500
    assert len(results["structures"]) == 4
    summary = results["summary"].get_dict()
    assert summary["num_stored"] == 4 and summary["not_stored"] == []
    assert "missing" in summary["summary_file"]


def test_sample_corrupt_checkpoint(parse, dit_checkpoint):
    _, calcfunction = parse("adit.sample", "sample_corrupt_checkpoint", _sample_inputs(dit_checkpoint, "molecule", 4))
    assert calcfunction.exit_status == 310
    assert "corrupt" in calcfunction.exit_message


@pytest.mark.parametrize("kind", ["molecule", "crystal"])
def test_evaluate_splits_results_and_records(parse, fixture_folder, kind):
    inputs = {"samples": orm.SinglefileData.from_string("", "s.extxyz"), "kind": orm.Str(kind)}
    results, calcfunction = parse("adit.evaluate", f"evaluate_{kind}", inputs)
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    payload = json.loads((fixture_folder(f"evaluate_{kind}", "retrieved") / "evaluation.json").read_text())
    assert results["results"]["validity"] == payload["validity"]
    assert results["results"]["counts"] == payload["counts"]
    assert "per_structure" not in results["results"].get_dict()
    records = results["per_structure"]["records"]
    assert [r["index"] for r in records] == list(range(payload["num_structures"]))
    assert [r["valid"] for r in records] == [r["valid"] for r in payload["per_structure"]]


def test_evaluate_without_json_is_missing_output(tmp_path, fixture_folder, generate_calc_job_node, parse_folder):
    folder = tmp_path / "retrieved"
    shutil.copytree(fixture_folder("evaluate_molecule", "retrieved"), folder)
    (folder / "evaluation.json").unlink()
    inputs = {"samples": orm.SinglefileData.from_string("", "s.extxyz"), "kind": orm.Str("molecule")}
    _, calcfunction = parse_folder(generate_calc_job_node("adit.evaluate", inputs, folder), "adit.evaluate")
    assert calcfunction.exit_status == 300


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{not json", "evaluation.json"),
        ("[1, 2]", "not a JSON object"),
        ('{"validity": {}}', "`per_structure` list"),
    ],
)
def test_evaluate_unreadable_json_names_the_file_and_the_problem(
    tmp_path, fixture_folder, generate_calc_job_node, parse_folder, content, error
):
    folder = tmp_path / "retrieved"
    shutil.copytree(fixture_folder("evaluate_molecule", "retrieved"), folder)
    (folder / "evaluation.json").write_text(content)
    inputs = {"samples": orm.SinglefileData.from_string("", "s.extxyz"), "kind": orm.Str("molecule")}
    _, calcfunction = parse_folder(generate_calc_job_node("adit.evaluate", inputs, folder), "adit.evaluate")
    assert calcfunction.exit_status == 301
    assert "evaluation.json" in calcfunction.exit_message and error in calcfunction.exit_message


def test_evaluate_non_finite_numbers_become_none(tmp_path, fixture_folder, generate_calc_job_node, parse_folder):
    folder = tmp_path / "retrieved"
    shutil.copytree(fixture_folder("evaluate_molecule", "retrieved"), folder)
    payload = json.loads((folder / "evaluation.json").read_text())
    payload["wasserstein"] = {"num_atoms": float("nan")}
    payload["per_structure"][0]["energy"] = float("inf")
    (folder / "evaluation.json").write_text(json.dumps(payload))  # Python writes NaN / Infinity
    inputs = {"samples": orm.SinglefileData.from_string("", "s.extxyz"), "kind": orm.Str("molecule")}
    results, calcfunction = parse_folder(generate_calc_job_node("adit.evaluate", inputs, folder), "adit.evaluate")
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    assert results["results"]["wasserstein"] == {"num_atoms": None}
    assert results["per_structure"]["records"][0]["energy"] is None


def test_sample_failed_decodes_are_stored_with_their_reason(tmp_path, fixture_folder, generate_calc_job_node,
                                                            parse_folder, dit_checkpoint):
    """A crystal the read-out flagged (``info['decode_failed']``) is stored, with the reason as an extra."""
    case = tmp_path / "case"
    shutil.copytree(fixture_folder("sample_crystal"), case)
    frames = read(case / "temporary" / "samples.extxyz", index=":")
    frames[1].info["decode_failed"] = "decoded lattice angle(s) outside (50°, 130°): 31.0, 90.0, 90.0"
    write(case / "temporary" / "samples.extxyz", frames, format="extxyz")
    node = generate_calc_job_node("adit.sample", _sample_inputs(dit_checkpoint, "crystal", 3), case / "retrieved")
    results, calcfunction = parse_folder(node, "adit.sample", temporary=case / "temporary", tmp_dir=tmp_path / "t")
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    flagged = results["structures"]["sample_00001"].base.extras.all
    assert flagged["decode_failed"].startswith("decoded lattice angle") and flagged["kind"] == "crystal"
    assert "decode_failed" not in results["structures"]["sample_00000"].base.extras.all


@pytest.mark.parametrize(("status", "expected"), [("143", 400), ("138", 400), ("4", 420)])
def test_train_saved_on_the_schedulers_signal_is_resumable(
    fixture_folder, tmp_path, generate_calc_job_node, parse_folder, status, expected
):
    """SIGTERM at Slurm's time limit (143) or SIGUSR1 (138) after the state was saved: the checkpoint is
    attached and the run resumes (400). An `interrupted` metrics.json left by an earlier slice in the
    resumed folder does not hide this run's own failure (NaN: 420)."""
    folder = tmp_path / "run"
    shutil.copytree(fixture_folder("train_time_limit", "retrieved"), folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted", "signal": "SIGTERM"}))
    for name in ("_adit_status", "_adit_exit_status"):
        (folder / name).write_text(f"{status}\n")
    node = generate_calc_job_node("adit.train", _train("vae"), folder)
    results, calcfunction = parse_folder(
        node, "adit.train", temporary=fixture_folder("train_time_limit", "temporary"), tmp_dir=tmp_path
    )
    assert calcfunction.exit_status == expected
    assert ("checkpoint" in results) == (expected == 400)
