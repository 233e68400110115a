"""adit.generate for real on the embedded profile (SQLite storage, no broker, run in-process).

A tiny model (width 32, one layer, a few steps on 64 QM9 molecules) is trained,
sampled and evaluated by the real ``adit`` command through AiiDA; then the
provenance, the extras, the group and the queries are checked. Also: a sample
CalcJob with identical inputs is taken from the cache, and bad generate inputs are
rejected before anything runs.
"""

import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_adit.data.checkpoint import CheckpointData
from aiida_adit.queries import generated_structures, structures
from aiida_adit.workflows.generate import AditGenerateWorkChain

TINY = {
    "max_steps": 4,
    "max_train_systems": 64,
    "batch_size": 16,
    "log_every": 2,
    "ckpt_every": 2,
    "vae": {"d_model": 32, "num_layers": 1, "num_heads": 2},
    "dit": {"d_model": 32, "num_layers": 1, "num_heads": 2},
}


@pytest.mark.slow
def test_generate_trains_samples_evaluates_and_groups(aiida_profile_clean, adit_code):
    # the embedded set-up: SQLite storage and no broker at all, processes run in this interpreter
    assert aiida_profile_clean.storage_backend == "core.sqlite_dos"
    assert aiida_profile_clean.process_control_backend is None
    code = adit_code("adit.sample")
    overrides = {
        "train_vae": {"settings": TINY},
        "train_dit": {"settings": TINY},
        "sample": {"num_samples": 3, "steps": 4, "max_iterations": 2},
        "clean_workdir": True,
    }
    evaluate_code = adit_code("adit.evaluate", label="adit-evaluate-cpu")  # e.g. a CPU partition's adit
    builder = AditGenerateWorkChain.get_builder_from_protocol(code, protocol="train-fast", overrides=overrides,
                                                              codes={"evaluate": evaluate_code})
    builder.group_label = orm.Str("tests/generate")
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message

    # per-step codes, max_iterations and clean_workdir reached the steps; the work folders are emptied
    # (what the trainings and the sampling made is stored), the evaluation ran with its own code
    calcs = {c.process_label: c for c in node.called_descendants if isinstance(c, orm.CalcJobNode)}
    assert calcs["AditEvaluateCalculation"].inputs.code.pk == evaluate_code.pk
    assert calcs["AditSampleCalculation"].inputs.code.pk == code.pk
    sample_chain = node.base.links.get_outgoing(link_label_filter="sample").one().node
    assert sample_chain.inputs.max_iterations.value == 2
    trainings = [c for c in node.called_descendants if c.process_label == "AditTrainCalculation"]
    assert len(trainings) == 2
    for calc in (*trainings, calcs["AditSampleCalculation"]):
        assert calc.outputs.remote_folder.is_empty, calc.process_label
    assert not calcs["AditEvaluateCalculation"].outputs.remote_folder.is_empty  # not a restart step: kept

    # provenance: VAE -> DiT training -> the checkpoint sampled is the DiT trained here
    dit, vae = results["checkpoint"], results["vae_checkpoint"]
    assert (dit.kind, vae.kind) == ("dit", "vae")
    assert dit.base.attributes.get("dataset") == "qm9"
    train_dit = node.base.links.get_outgoing(link_label_filter="train_dit").one().node
    assert train_dit.inputs.train.parent_checkpoint.pk == vae.pk
    users = dit.base.links.get_outgoing(node_class=orm.CalcJobNode).all_nodes()
    assert [c.process_type for c in users] == ["aiida.calculations:adit.sample"]

    # three molecules, with extras copied from the evaluation records, in the group, found by the queries
    generated = results["structures"]
    assert len(generated) == 3
    records = {r["index"]: r for r in node.outputs.evaluation.creator.outputs.per_structure["records"]}
    for label, structure in generated.items():
        record = records[int(label.split("_")[-1])]
        assert structure.pbc == (False, False, False)
        # molecules: `valid` is the strict route in one piece; the ADiT route's flag is kept beside it
        assert structure.base.extras.get("valid") is record["valid_connected"]
        assert structure.base.extras.get("valid_adit") is record["valid"]
        assert structure.base.extras.get("fragments") == record["fragments"]
        assert structure.base.extras.get("formula") == record["formula"]
        assert structure.base.extras.get("kind") == "molecule"
    group = orm.load_group("tests/generate")
    assert {n.pk for n in group.nodes} == {n.pk for n in generated.values()}
    assert {n.pk for n in structures(generated_structures(workchain=node))} == {n.pk for n in generated.values()}
    assert len(structures(generated_structures(checkpoint=dit))) == 3
    valid = {n.pk for n in generated.values() if n.base.extras.get("valid")}
    assert {n.pk for n in structures(generated_structures(workchain=node, valid=True))} == valid
    assert node.outputs.evaluation["num_structures"] == 3


def test_sample_with_identical_inputs_is_cached(aiida_profile_clean, adit_code, fixture_folder):
    from aiida.manage.caching import enable_caching
    from aiida.plugins import CalculationFactory

    checkpoint = CheckpointData.get_or_create(fixture_folder("train_dit", "temporary") / "dit.safetensors")
    inputs = {
        "code": adit_code("adit.sample"),
        "checkpoint": checkpoint,
        "num_samples": orm.Int(2),
        "kind": orm.Str("molecule"),
        "steps": orm.Int(3),
        "seed": orm.Int(11),
        "metadata": {"options": {"max_wallclock_seconds": 600}},
    }
    with enable_caching(identifier="aiida.calculations:adit.sample"):
        _, first = run_get_node(CalculationFactory("adit.sample"), **inputs)
        _, second = run_get_node(CalculationFactory("adit.sample"), **inputs)
    assert first.is_finished_ok, first.exit_message
    assert not first.base.caching.is_created_from_cache
    assert second.base.caching.is_created_from_cache
    assert second.base.caching.get_cache_source() == first.uuid
    assert second.outputs.samples.get_content() == first.outputs.samples.get_content()
    assert len(second.outputs.structures) == 2


@pytest.mark.parametrize("entry_point", ["adit.train", "adit.sample", "adit.evaluate", "adit.relax"])
def test_every_failure_exit_code_invalidates_the_cache(entry_point):
    """docs/aiida.md promises it: no failed adit CalcJob can be reused as a cache source."""
    from aiida.plugins import CalculationFactory

    codes = CalculationFactory(entry_point).spec().exit_codes
    own = {name: code for name, code in codes.items() if code.status >= 300}
    assert own, entry_point
    assert [name for name, code in own.items() if not code.invalidates_cache] == []


@pytest.mark.parametrize("append_text", ["", "true  # e.g. nvidia-smi or seff: it succeeds and resets $?"])
def test_a_failing_run_is_reported_whatever_append_text_runs(aiida_profile_clean, adit_code, fixture_folder,
                                                             append_text):
    """A real `adit sample` that stops with a bad input (status 2): the parser reports 302 even when the
    user's `append_text` runs a command that would hide the status from the shell's `$?`."""
    from aiida.plugins import CalculationFactory

    checkpoint = CheckpointData.get_or_create(fixture_folder("train_dit", "temporary") / "dit.safetensors")
    _, node = run_get_node(
        CalculationFactory("adit.sample"),
        code=adit_code("adit.sample"),
        checkpoint=checkpoint,
        num_samples=orm.Int(2),
        kind=orm.Str("molecule"),
        num_atoms=orm.Int(5000),  # more than `adit sample` accepts: exit status 2
        metadata={"options": {"max_wallclock_seconds": 600, "append_text": append_text}},
    )
    assert node.exit_status == 302, node.exit_message
    assert "--num-atoms" in node.exit_message
    names = node.outputs.retrieved.base.repository.list_object_names()
    assert "_adit_status" in names
    assert node.outputs.retrieved.base.repository.get_object_content("_adit_status").strip() == "2"


#: Address space (KiB) allowed above what a 2-system run peaks at: a batch of 128 systems of 1,000 atoms needs
#: about 340 MiB more, 64 about 110 MiB more (measured: VmPeak 858 / 968 / 1,202 MiB at batches of 2 / 64 / 128).
OOM_HEADROOM_KIB = 200_000


def _peak_address_space_kib(checkpoint) -> int:
    """VmPeak (KiB) of an `adit sample` of 2 systems of 1,000 atoms in this environment: the baseline the
    memory limit is set from, since the libraries' own mappings differ from one installation to another."""
    import os
    import subprocess
    import sys

    probe = ("import sys, tempfile\nfrom adit_torch.cli import main\n"
             "with tempfile.TemporaryDirectory() as tmp:\n"
             f"    main(['sample', '--checkpoint', {str(checkpoint)!r}, '--kind', 'molecule', '--num-samples', '2', "
             "'--batch-size', '2', '--num-atoms', '1000', '--steps', '1', '--out', tmp + '/p.extxyz', '--quiet'])\n"
             "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmPeak')][0])\n")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sample_out_of_memory_for_real_reruns_with_half_the_batch(aiida_profile_clean, adit_code, fixture_folder):
    """A real `adit sample` under `ulimit -v` runs out of memory (410); the work chain resubmits with half
    the batch until one fits and finishes with every structure asked for."""
    from aiida.plugins import WorkflowFactory

    path = fixture_folder("train_dit", "temporary") / "dit.safetensors"
    limit = _peak_address_space_kib(path) + OOM_HEADROOM_KIB
    checkpoint = CheckpointData.get_or_create(path)
    sample = {
        "code": adit_code("adit.sample"),
        "checkpoint": checkpoint,
        "num_samples": orm.Int(128),
        "batch_size": orm.Int(128),
        "num_atoms": orm.Int(1000),
        "kind": orm.Str("molecule"),
        "steps": orm.Int(1),
        "metadata": {"options": {"max_wallclock_seconds": 600, "prepend_text": f"ulimit -v {limit}",
                                 "environment_variables": {"OMP_NUM_THREADS": "1"}}},
    }
    _, node = run_get_node(WorkflowFactory("adit.sample"), sample=sample)
    assert node.is_finished_ok, node.exit_message
    calcs = sorted(node.called, key=lambda n: n.ctime)
    assert calcs[0].exit_status == 410
    assert "can't allocate memory" in calcs[0].exit_message
    batches = [c.inputs.batch_size.value for c in calcs]
    assert batches == [128 // 2**i for i in range(len(calcs))]  # halved at every rerun
    assert all(c.exit_status == 410 for c in calcs[:-1]) and calcs[-1].is_finished_ok
    assert len(node.outputs.structures) == 128
    assert node.outputs.summary["settings"]["batch_size"] == batches[-1]


def test_generate_rejects_inconsistent_inputs(aiida_profile_clean, adit_code, make_checkpoint):
    code = adit_code("adit.sample")
    vae = CheckpointData(file=str(make_checkpoint("vae"))).store()
    dit = CheckpointData(file=str(make_checkpoint("dit"))).store()

    builder = AditGenerateWorkChain.get_builder_from_protocol(code, protocol="train-fast", checkpoint=vae)
    with pytest.raises(ValueError, match="is of kind `vae`, expected `dit`"):
        run_get_node(builder)

    builder = AditGenerateWorkChain.get_builder_from_protocol(code, protocol="train-fast", checkpoint=dit)
    builder.train_vae.train.code = code
    builder.train_vae.train.settings = orm.Dict({"stage": "vae", "dataset": "qm9"})
    with pytest.raises(ValueError, match="do not give `train_vae`"):
        run_get_node(builder)

    builder = AditGenerateWorkChain.get_builder_from_protocol(code, protocol="train-fast", vae_checkpoint=dit)
    with pytest.raises(ValueError, match="`vae_checkpoint`: checkpoint<.*> is of kind `dit`"):
        run_get_node(builder)

    with pytest.raises(ValueError, match="unknown protocol 'slow'"):
        AditGenerateWorkChain.get_builder_from_protocol(code, protocol="slow")
    with pytest.raises(ValueError, match="`kind` is 'polymer'"):
        AditGenerateWorkChain.get_builder_from_protocol(code, checkpoint=dit, overrides={"kind": "polymer"})
    with pytest.raises(ValueError, match=r"codes: unknown step\(s\) \['relax'\]; the steps are \['train_vae'"):
        AditGenerateWorkChain.get_builder_from_protocol(code, checkpoint=dit, codes={"relax": code})


def test_protocols_bound_long_trainings_in_walltime_slices(aiida_profile_clean, adit_code):
    """moderate and precise resume a training over at most 8 walltime slices of their options' walltime."""
    code = adit_code("adit.train")
    for protocol in ("moderate", "precise"):
        builder = AditGenerateWorkChain.get_builder_from_protocol(code, protocol=protocol)
        for stage in ("train_vae", "train_dit"):
            assert builder[stage].max_iterations.value == 8, (protocol, stage)
            assert builder[stage].train.metadata.options.max_wallclock_seconds >= 43200


@pytest.mark.slow
def test_generate_chains_into_metastability_for_crystals(aiida_profile_clean, adit_code, fixture_folder):
    """The chain wires the generated crystals and their evaluation records into adit.metastability.

    The fixture DiT is a toy trained for a few steps: its crystals hold elements that CHGNet does not
    cover, so the relaxation fails per structure with that reason and the failure reaches the top as
    exit status 405 (the relax-and-score path itself is tested in test_metastability.py).
    """
    from aiida_adit.data.hull import ReferenceHullData

    code = adit_code("adit.sample")
    dit = CheckpointData.get_or_create(fixture_folder("train_dit", "temporary") / "dit.safetensors")
    overrides = {"kind": "crystal", "sample": {"num_samples": 2, "steps": 4}}
    builder = AditGenerateWorkChain.get_builder_from_protocol(
        code, protocol="train-fast", checkpoint=dit, overrides=overrides
    )
    builder.metastability.relax.code = adit_code("adit.relax")
    builder.metastability.relax.parameters = orm.Dict({"fmax": 0.1, "steps": 5})
    builder.metastability.relax.metadata = {
        "options": {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}, "max_wallclock_seconds": 600}
    }
    builder.metastability.hull = ReferenceHullData.offline()
    results, node = run_get_node(builder)

    generated = results["structures"]
    assert len(generated) == 2 and all(s.pbc == (True, True, True) for s in generated.values())
    chained = node.base.links.get_outgoing(link_label_filter="metastability").one().node
    assert chained.process_label == "AditMetastabilityWorkChain"
    # the chained work chain got exactly the generated crystals and the evaluation records for S.U.N.
    assert {n.uuid for n in chained.inputs.structures.values()} == {n.uuid for n in generated.values()}
    assert chained.inputs.evaluation.uuid == node.outputs.evaluation.creator.outputs.per_structure.uuid
    relax = chained.base.links.get_outgoing(link_label_filter="relax").one().node
    if node.is_finished_ok:  # a CHGNet-compatible sample: the rates come back through the chain
        assert results["metastability"]["rates"].pk == chained.outputs.rates.pk
    else:
        assert node.exit_status == AditGenerateWorkChain.exit_codes.ERROR_METASTABILITY_FAILED.status
        assert relax.exit_status == 420 and "not supported by chgnet" in relax.exit_message


def test_generate_rejects_relaxing_molecules(aiida_profile_clean, adit_code, make_checkpoint):
    code = adit_code("adit.sample")
    dit = CheckpointData(file=str(make_checkpoint("dit"))).store()
    builder = AditGenerateWorkChain.get_builder_from_protocol(code, protocol="train-fast", checkpoint=dit)
    builder.metastability.relax.code = adit_code("adit.relax")
    with pytest.raises(ValueError, match="`metastability` relaxes crystals, but `sample.sample.kind` is `molecule`"):
        run_get_node(builder)


@pytest.mark.slow
def test_fast_protocol_samples_the_shipped_model_relaxes_and_scores_crystals(aiida_profile_clean, adit_code):
    """The main job's protocol: no training, the shipped joint model's node (stored once), CHGNet and the hull."""
    from adit_torch.pretrained import DEFAULT_MODEL, MODELS

    code = adit_code("adit.sample")
    overrides = {"sample": {"num_samples": 3, "steps": 20}, "metastability": {"relax": {"steps": 5}},
                 "evaluate": {"reference": "none"}}
    builder = AditGenerateWorkChain.get_builder_from_protocol(code, protocol="fast", overrides=overrides)
    again = AditGenerateWorkChain.get_builder_from_protocol(code, protocol="fast")
    assert builder.checkpoint.pk == again.checkpoint.pk
    assert builder.checkpoint.label == DEFAULT_MODEL and builder.checkpoint.sha256 == MODELS[DEFAULT_MODEL].sha256
    assert builder.checkpoint.base.extras.get("pretrained") == DEFAULT_MODEL
    assert "code" not in builder.train_vae.train and "code" not in builder.train_dit.train  # nothing trains
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    generated = results["structures"]
    assert len(generated) == 3 and all(s.pbc == (True, True, True) for s in generated.values())
    rates = results["metastability"]["rates"].get_dict()
    assert rates["counts"]["structures"] == 3 and rates["potential"] and rates["hull"]
    assert set(results["metastability"]["e_above_hull"]) <= set(generated)
    assert rates["counts"]["with_e_hull"] == len(results["metastability"]["e_above_hull"])
    assert rates["sun_rate"] is not None  # the evaluation records reached the rates
    check_every_query(node, builder.checkpoint, generated, results["metastability"]["e_above_hull"])


def _pks(query) -> set[int]:
    return {n.pk for n in structures(query)}


def check_every_query(node, checkpoint, generated: dict, e_above_hull: dict) -> None:
    """Each filter of ``generated_structures`` on the nodes of a real ``adit.generate`` run with metastability.

    The expected sets are computed from the structures themselves (ASE symbols, the
    evaluation output, the metastability outputs), never from extras set by the test.
    """
    everything = {n.pk for n in generated.values()}
    assert _pks(generated_structures(workchain=node)) == everything
    assert _pks(generated_structures(checkpoint=checkpoint)) >= everything
    assert _pks(generated_structures(group=node.base.extras.get("group_label"))) == everything
    assert _pks(generated_structures(workchain=node, kind="crystal")) == everything
    assert _pks(generated_structures(workchain=node, kind="molecule")) == set()
    records = {r["index"]: r for r in node.outputs.evaluation.creator.outputs.per_structure["records"]}
    by_record = {label: records[int(label.split("_")[-1])] for label in generated}
    valid = {generated[k].pk for k, r in by_record.items() if r["valid"]}
    assert _pks(generated_structures(workchain=node, valid=True)) == valid
    assert _pks(generated_structures(workchain=node, valid=False)) == everything - valid
    label, first = sorted(generated.items())[0]
    assert _pks(generated_structures(workchain=node, formula=by_record[label]["formula"])) == {
        generated[k].pk for k, r in by_record.items() if r["formula"] == by_record[label]["formula"]
    }
    symbol = sorted(first.get_symbols_set())[0]
    assert _pks(generated_structures(workchain=node, elements=[symbol])) == {
        n.pk for n in generated.values() if symbol in n.get_symbols_set()
    }
    # E_hull lives on the relaxed structures (created by adit.relax) and is copied to the generated ones
    assert e_above_hull, "no crystal got an energy above hull"
    values = sorted(v.value for v in e_above_hull.values())
    for threshold in (values[0], values[-1], values[0] - 1.0):
        expected = {generated[k].pk for k, v in e_above_hull.items() if v.value <= threshold}
        assert _pks(generated_structures(workchain=node, max_e_above_hull=threshold)) == expected


def test_precise_protocol_requests_a_gpu_for_training_and_sampling_only(aiida_profile_clean, adit_code):
    """GPU steps run on cuda with a GPU request; evaluation never holds one; every step keeps the base options."""
    builder = AditGenerateWorkChain.get_builder_from_protocol(adit_code("adit.sample"), "precise")
    gres = "#SBATCH --gres=gpu:1"
    for stage in ("train_vae", "train_dit"):
        assert builder[stage].train.metadata.options["custom_scheduler_commands"] == gres
        assert builder[stage].train.settings["device"] == "cuda"
        assert builder[stage].train.metadata.options["max_wallclock_seconds"] == 86400
    assert builder.sample.sample.metadata.options["custom_scheduler_commands"] == gres
    assert builder.sample.sample.device.value == "cuda"
    assert "custom_scheduler_commands" not in builder.evaluate.metadata.options
    assert builder.evaluate.metadata.options["max_wallclock_seconds"] == 86400
    moderate = AditGenerateWorkChain.get_builder_from_protocol(
        adit_code("adit.sample"), "moderate",
        overrides={"sample": {"solver": "heun", "steps": 10, "guidance_interval": [0.0, 0.5]}})
    assert "custom_scheduler_commands" not in moderate.train_vae.train.metadata.options
    assert moderate.sample.sample.solver.value == "heun" and moderate.sample.sample.steps.value == 10
    assert moderate.sample.sample.guidance_interval.get_list() == [0.0, 0.5]


def test_sample_under_conditions_is_queryable_by_them(aiida_profile_clean, adit_code, tmp_path, monkeypatch):
    """A real adit.sample run with a `conditions` input on a (tiny) model trained with them: the conditions
    reach the command, land in every structure's extras, and `generated_structures(conditions=...)` finds
    exactly those structures, whatever the spelling of the chemical system."""
    import json
    import pathlib

    from aiida.plugins import CalculationFactory

    from adit_torch.cli import main

    fixtures = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
    monkeypatch.setenv("ADIT_MP20_DIR", str(fixtures / "mp20"))
    monkeypatch.setenv("ADIT_QM9_DIR", str(fixtures / "qm9"))
    monkeypatch.setenv("ADIT_CACHE_DIR", str(tmp_path / "cache"))
    settings = {"vae": {"d_model": 32, "num_layers": 1, "num_heads": 4},
                "dit": {"d_model": 32, "num_layers": 1, "num_heads": 4, "num_space_groups": 230,
                        "num_element_types": 100},
                "flow": {"steps": 3}, "train": {"batch_size": 8, "val_every": 0, "val_size": 0, "val_samples": 0}}
    (tmp_path / "s.json").write_text(json.dumps(settings))
    assert main(["train-vae", "--dataset", "joint", "--out-dir", str(tmp_path / "vae"), "--settings",
                 str(tmp_path / "s.json"), "--max-steps", "2", "--quiet"]) == 0
    assert main(["train-dit", "--vae", str(tmp_path / "vae" / "vae.safetensors"), "--dataset", "joint", "--out-dir",
                 str(tmp_path / "dit"), "--settings", str(tmp_path / "s.json"), "--max-steps", "2", "--quiet"]) == 0
    checkpoint = CheckpointData.get_or_create(tmp_path / "dit" / "dit.safetensors")
    inputs = {"code": adit_code("adit.sample"), "checkpoint": checkpoint, "num_samples": orm.Int(2),
              "kind": orm.Str("crystal"), "steps": orm.Int(2), "metadata": {"options": {"max_wallclock_seconds": 600}}}
    conditions = {"space_group": 225, "chemical_system": "O-Mg", "guidance": {"space_group": 2.0}}
    results, conditioned = run_get_node(CalculationFactory("adit.sample"), conditions=orm.Dict(conditions), **inputs)
    assert conditioned.is_finished_ok, conditioned.exit_message
    assert results["summary"]["conditions"]["space_group"] == 225
    _, plain = run_get_node(CalculationFactory("adit.sample"), **inputs)
    assert plain.is_finished_ok, plain.exit_message

    made = {n.pk for n in conditioned.outputs.structures.values()}
    for node in conditioned.outputs.structures.values():
        assert node.base.extras.get("conditions") == {"space_group": 225, "chemical_system": "O-Mg"}  # by Z
    assert all("conditions" not in n.base.extras.all for n in plain.outputs.structures.values())

    def pks(**filters):
        return {n.pk for n in structures(generated_structures(**filters))}

    assert pks(conditions={"space_group": 225}) == made
    assert pks(conditions={"chemical_system": "Mg-O"}) == made == pks(conditions={"chemical_system": "O-Mg"})
    assert pks(conditions={"space_group": 194}) == set()


def test_protocol_conditions_reach_the_samples_and_an_untrained_one_is_refused(aiida_profile_clean, adit_code):
    """`sample.conditions` of a protocol: sampled by the conditioned shipped model and recorded on every
    structure; asked of a model not trained with it, a clear error before anything runs."""
    from aiida_adit.queries import generated_structures

    code = adit_code("adit.sample")
    conditions = {"chemical_system": "C-H-O", "guidance": {"chemical_system": 2.0}}
    overrides = {"pretrained": "adit-xs-joint-cond", "kind": "molecule",
                 "sample": {"num_samples": 3, "steps": 10, "conditions": conditions}}
    builder = AditGenerateWorkChain.get_builder_from_protocol(code, "fast", overrides=overrides, evaluate=False)
    assert builder.sample.sample.conditions.get_dict() == conditions
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message
    made = {n.pk for n in results["structures"].values()}
    assert len(made) == 3
    assert {n.pk for n in structures(generated_structures(workchain=node, conditions={"chemical_system": "O-C-H"}))
            } == made
    with pytest.raises(ValueError, match="'adit-xs-joint' was not trained with chemical_system; it supports no "):
        AditGenerateWorkChain.get_builder_from_protocol(code, "fast", overrides={
            "kind": "molecule", "sample": {"conditions": conditions}})
    with pytest.raises(ValueError, match=r"sample.conditions: --condition 'space_group=999'"):
        AditGenerateWorkChain.get_builder_from_protocol(code, "fast", overrides={
            "pretrained": "adit-xs-joint-cond", "sample": {"conditions": {"space_group": 999}}})
