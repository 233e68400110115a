"""``ReferenceHullData`` and the energy-above-hull calcfunction: attributes, reuse, provenance, hand values."""

import pytest
from aiida import orm

from adit_torch.errors import DataFormatError
from aiida_adit.data.hull import ReferenceHullData
from aiida_adit.workflows.functions import energy_above_hull, stability_rates

# Li-O reference energies (total eV per formula): the same made-up system as the library tests
LIO_CSV = "formula,energy\nLi,-1.9\nO2,-9.8\nLi2O,-14.3\nLi2O2,-19.9\n"


@pytest.fixture
def lio_hull(tmp_path):
    path = tmp_path / "li_o.csv"
    path.write_text(LIO_CSV)
    return ReferenceHullData.get_or_create(path)


def test_attributes_describe_the_hull(lio_hull, tmp_path):
    assert lio_hull.is_stored
    assert lio_hull.name == "li_o.csv"
    assert lio_hull.base.attributes.get("num_entries") == 4
    assert lio_hull.base.attributes.get("elements") == ["Li", "O"]
    assert len(lio_hull.sha256) == 64
    again = tmp_path / "copy.csv"
    again.write_text(LIO_CSV)
    assert ReferenceHullData.get_or_create(again).pk == lio_hull.pk  # same content: same node
    assert lio_hull.load().e_above_hull("Li2O", -14.3) == pytest.approx(0.0, abs=1e-9)


def test_a_file_that_is_not_a_hull_is_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,value\nLi,-1\n")
    with pytest.raises(DataFormatError, match="needs a 'formula' column"):
        ReferenceHullData(file=str(bad))


def test_energy_above_hull_is_provenance_tracked(lio_hull):
    # Li2O2 in a conventional-looking cell; only its composition matters for the hull
    structure = orm.StructureData(cell=[[3.1, 0, 0], [0, 3.1, 0], [0, 0, 7.6]])
    for symbol, pos in [("Li", (0, 0, 0)), ("Li", (1.55, 1.55, 3.8)), ("O", (0, 0, 2.0)), ("O", (1.55, 1.55, 5.8))]:
        structure.append_atom(position=pos, symbols=symbol)
    energy = orm.Float(-19.5)  # 0.4 eV per cell above the Li2O2 vertex -> 0.1 eV/atom
    result, node = energy_above_hull.run_get_node(structure, energy, lio_hull)
    assert result["e_above_hull"].value == pytest.approx(0.1, abs=1e-9)
    assert result["e_form_per_atom"].value == pytest.approx((-19.5 + 3.8 + 9.8) / 4)
    incoming = {link.link_label: link.node.pk for link in node.base.links.get_incoming().all()}
    assert incoming == {"structure": structure.pk, "energy": energy.pk, "hull": lio_hull.pk}


def test_rates_calcfunction_counts_missing_structures_as_neither():
    settings = orm.Dict({"keys": ["a", "b", "c"], "potential": "chgnet-0.3.0", "hull": "li_o.csv"})
    rates = stability_rates(settings, a=orm.Float(-0.01), b=orm.Float(0.05))
    assert rates["counts"]["structures"] == 3 and rates["counts"]["stable"] == 1
    assert rates["metastable_rate"] == pytest.approx(2 / 3)
    assert rates["per_structure"] == {"a": -0.01, "b": 0.05, "c": None}


def test_rates_from_batch_summaries_equal_rates_from_floats(lio_hull):
    """The work chain passes one summary Dict per hull batch (not one Float per structure); same rates."""
    settings = orm.Dict({"keys": ["a", "b", "c", "d"], "potential": "chgnet-0.3.0", "hull": "li_o.csv"})
    floats = stability_rates(settings, a=orm.Float(-0.01), b=orm.Float(0.05), d=orm.Float(0.3))
    batches, node = stability_rates.run_get_node(
        settings,
        batch_0000=orm.Dict({"e_above_hull": {"a": -0.01, "b": 0.05}, "e_form_per_atom": {}}),
        d=orm.Float(0.3),  # a batch of an older run, reused as Floats
    )
    assert batches.get_dict() == floats.get_dict()
    assert len(node.base.links.get_incoming().all()) == 3  # settings, one batch, one Float
