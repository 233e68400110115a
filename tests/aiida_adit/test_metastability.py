"""``adit.metastability`` end to end on real MP-20 crystals: MLIP CalcJob route and a common-relax engine route."""

import pathlib

import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.engine import WorkChain, calcfunction, run_get_node

from aiida_adit.data.hull import ReferenceHullData

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "stability"
OPTIONS = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}, "max_wallclock_seconds": 600}


def _crystals(*ids):
    from adit_torch.io import read_systems

    table = {s.info["id"]: s for s in read_systems(FIXTURES / "mp20_small.csv")}
    return {mid.replace("-", "_"): orm.StructureData(ase=table[mid].to_ase()) for mid in ids}


@pytest.fixture
def offline_hull():
    from adit_torch.stability.hull import default_hull_path

    if not default_hull_path().is_file():
        pytest.fail("the offline reference hull is missing: run scripts/build_reference_hull.py")
    return ReferenceHullData.offline()


# ----------------------------------------------------------------------------- a common-relax engine
@calcfunction
def chgnet_relax(structure: orm.StructureData, parameters: orm.Dict) -> dict:
    """Relax in-process with CHGNet: stands in for a DFT code behind the common relax interface."""
    from adit_torch.stability.relax import relax_system
    from adit_torch.system import AtomicSystem

    params = parameters.get_dict()
    result = relax_system(AtomicSystem.from_ase(structure.get_ase()), fmax=params["fmax"], steps=params["steps"])
    return {
        "relaxed_structure": orm.StructureData(ase=result.system.to_ase()),
        "total_energy": orm.Float(result.energy),
    }


class _Generator:
    """The part of ``CommonRelaxInputGenerator`` the work chain uses: ``get_builder(structure=..., ...)``."""

    def __init__(self, process_class):
        self.process_class = process_class

    def get_builder(self, *, structure, engines, protocol="moderate", relax_type="positions_cell", **_):
        assert relax_type == "positions_cell" and "relax" in engines
        builder = self.process_class.get_builder()
        builder.structure = structure
        builder.parameters = orm.Dict({"fast": {"fmax": 0.1, "steps": 40}}.get(protocol, {"fmax": 0.05, "steps": 200}))
        return builder


class CommonRelaxStub(WorkChain):
    """A relax work chain with the common-workflows outputs ``relaxed_structure`` and ``total_energy``."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("structure", valid_type=orm.StructureData)
        spec.input("parameters", valid_type=orm.Dict)
        spec.output("relaxed_structure", valid_type=orm.StructureData)
        spec.output("total_energy", valid_type=orm.Float)
        spec.outline(cls.relax)

    @classmethod
    def get_input_generator(cls):
        return _Generator(cls)

    def relax(self):
        self.out_many(chgnet_relax(self.inputs.structure, self.inputs.parameters))


# ----------------------------------------------------------------------------- tests
def test_mlip_route_relaxes_scores_and_links_every_step(adit_code, offline_hull):
    from aiida.plugins import WorkflowFactory

    structures = _crystals("mp-1185360", "mp-972454")
    evaluation = orm.Dict(
        {
            "records": [
                {"valid": True, "unique_group": 0, "novel": True},
                {"valid": True, "unique_group": 1, "novel": False},
            ]
        }
    )
    inputs = {
        "structures": structures,
        "hull": offline_hull,
        "evaluation": evaluation,
        "relax": {
            "code": adit_code("adit.relax"),
            "parameters": orm.Dict({"fmax": 0.05, "steps": 100}),
            "metadata": {"options": OPTIONS},
        },
    }
    results, node = run_get_node(WorkflowFactory("adit.metastability"), **inputs)
    assert node.is_finished_ok, node.exit_message
    assert sorted(results["relaxed_structures"]) == ["mp_1185360", "mp_972454"]
    for key, value in results["e_above_hull"].items():
        relaxed = results["relaxed_structures"][key]
        assert relaxed.base.extras.get("relaxed_from") == structures[key].uuid
        assert relaxed.base.extras.get("e_above_hull") == pytest.approx(value.value)
        assert relaxed.base.extras.get("metastable") == (value.value < 0.1)
        # real MP-20 phases (MP E_hull < 0.02 eV/atom) come out near the CHGNet hull after a CHGNet relaxation
        assert -0.15 < value.value < 0.1, (key, value.value)
        # the generated (input) structure carries the same extras, so queries on generated structures see them
        assert structures[key].base.extras.get("e_above_hull") == pytest.approx(value.value)
        assert structures[key].base.extras.get("relaxed_structure") == relaxed.uuid
        creator = value.creator
        incoming = {link.link_label: link.node.uuid for link in creator.base.links.get_incoming().all()}
        relax = node.base.links.get_outgoing(link_label_filter="relax").one().node
        assert incoming[f"structures__{key}"] == relaxed.uuid and incoming["hull"] == offline_hull.uuid
        assert incoming["relax_results__relax"] == relax.outputs.results.uuid  # the CalcJob's energies
        assert relax.outputs.results["structures"][key]["energy"] == pytest.approx(relax.outputs.energies[key].value)
    hull_calcs = [n for n in node.called if n.process_label == "energies_above_hull"]
    assert len(hull_calcs) == 1  # one process for the batch, not one per structure
    rates = results["rates"].get_dict()
    assert rates["hull"] == "offline-mp20-chgnet" and rates["potential"] == "chgnet-0.3.0"
    assert rates["counts"]["structures"] == 2
    assert rates["counts"]["msun"] == int(results["e_above_hull"]["mp_1185360"].value < 0.1)
    found = (
        orm.QueryBuilder()
        .append(orm.StructureData, filters={"extras.e_above_hull": {"<": 0.1}}, project="uuid")
        .all(flat=True)
    )
    assert set(found) >= {
        s.uuid for k, s in results["relaxed_structures"].items() if results["e_above_hull"][k].value < 0.1
    }


def test_relaxations_go_out_in_bounded_waves_and_hulls_in_batches(adit_code, offline_hull):
    """Three crystals, two per CalcJob, one CalcJob in flight, two per hull calcfunction."""
    from aiida.plugins import WorkflowFactory

    structures = _crystals("mp-1185360", "mp-972454", "mp-30033")
    inputs = {
        "structures": structures,
        "hull": offline_hull,
        "relax_batch_size": orm.Int(2),
        "max_concurrent": orm.Int(1),
        "hull_batch_size": orm.Int(2),
        "relax": {
            "code": adit_code("adit.relax"),
            "parameters": orm.Dict({"fmax": 0.1, "steps": 5}),
            "metadata": {"options": OPTIONS},
        },
    }
    results, node = run_get_node(WorkflowFactory("adit.metastability"), **inputs)
    assert node.is_finished_ok, node.exit_message
    calcs = sorted(
        (link for link in node.base.links.get_outgoing(node_class=orm.CalcJobNode).all()), key=lambda link: link.node.pk
    )
    assert [link.link_label for link in calcs] == ["relax_0000", "relax_0001"]
    first, second = (link.node for link in calcs)
    assert sorted(first.inputs.structures) == sorted(structures)[:2] and list(second.inputs.structures) == [
        sorted(structures)[2]
    ]
    # one in flight at a time: the second wave went out after the first had finished
    assert second.ctime > first.mtime
    hulls = {
        n.base.links.get_incoming(link_type=LinkType.CALL_CALC).one().link_label: n
        for n in node.called
        if n.process_label == "energies_above_hull"
    }
    assert sorted(hulls) == ["e_above_hull_0000", "e_above_hull_0001"]
    assert sorted(results["e_above_hull"]) == sorted(structures)
    # the last batch's energies come from the second CalcJob's records only
    last = {
        link.link_label
        for link in hulls["e_above_hull_0001"].base.links.get_incoming(link_type=LinkType.INPUT_CALC).all()
    }
    assert last == {"hull", f"structures__{sorted(structures)[2]}", "relax_results__relax_0001"}
    assert results["rates"]["counts"]["structures"] == 3


def test_common_relax_engine_route(offline_hull):
    from aiida.plugins import WorkflowFactory

    structures = _crystals("mp-1185360")
    inputs = {
        "structures": structures,
        "hull": offline_hull,
        "engine": orm.Str(f"{__name__}:CommonRelaxStub"),
        "engine_inputs": orm.Dict(
            {"engines": {"relax": {"code": "any@localhost"}}, "protocol": "fast", "relax_type": "positions_cell"}
        ),
    }
    results, node = run_get_node(WorkflowFactory("adit.metastability"), **inputs)
    assert node.is_finished_ok, node.exit_message
    called = [n.process_label for n in node.called]
    assert "CommonRelaxStub" in called
    e_hull = results["e_above_hull"]["mp_1185360"].value
    assert -0.15 < e_hull < 0.1
    assert results["rates"]["potential"] == f"{__name__}:CommonRelaxStub"


def test_exactly_one_relaxation_route(adit_code, generate_workchain, offline_hull):
    structures = _crystals("mp-1185360")
    with pytest.raises(ValueError, match="exactly one"):
        generate_workchain("adit.metastability", {"structures": structures, "hull": offline_hull})
    with pytest.raises(ValueError, match="exactly one"):
        generate_workchain(
            "adit.metastability",
            {
                "structures": structures,
                "hull": offline_hull,
                "engine": orm.Str("x:Y"),
                "engine_inputs": orm.Dict({}),
                "relax": {"code": adit_code("adit.relax")},
            },
        )
