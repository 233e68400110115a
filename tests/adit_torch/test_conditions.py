"""Conditions: parsing and errors, training labels on real data, guidance per condition, zero-initialised
embedders for fine-tuning, and `adit train-dit` / `adit sample` with conditions end to end (fixtures)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from adit_model_data import qm9_systems

from adit_torch.cli import EXIT_CODES, main
from adit_torch.conditions import (
    NUM_ELEMENT_TYPES,
    PROPERTIES,
    SampleConditions,
    all_conditions,
    condition_labels,
    guidance_terms,
    num_guidance_terms,
    parse_conditions,
)
from adit_torch.config import DiTConfig
from adit_torch.datasets import SystemDataset
from adit_torch.dit import Condition, DiT, GuidedDenoiser
from adit_torch.errors import ConfigError
from adit_torch.io import read_systems
from adit_torch.recipes import JointSystems

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
COND = DiTConfig(d_model=32, num_layers=1, num_heads=4, num_space_groups=230, num_element_types=NUM_ELEMENT_TYPES)


def test_parse_conditions_and_their_errors():
    c = parse_conditions(["space_group=225", "chemical_system=O-Fe-Li"], ["space_group=2.5"])
    assert c.space_group == 225 and c.chemical_system == (3, 8, 26)
    assert c.scale("space_group") == 2.5 and c.scale("chemical_system") == 1.0
    assert c.as_dict() == {"space_group": 225, "chemical_system": "Li-O-Fe",
                           "guidance": {"space_group": 2.5, "chemical_system": 1.0}}
    for items, guidance, match in [
        (["bandgap=1.5"], None, "unknown key 'bandgap'"),
        (["space_group=0"], None, "1..230"),
        (["space_group=231"], None, "1..230"),
        (["chemical_system=Li-Xx"], None, "not element symbols: Xx"),
        (["space_group=12", "space_group=13"], None, "given twice"),
        (["space_group"], None, "KEY=VALUE"),
        (["space_group=12"], ["space_group=big"], "KEY=SCALE"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_conditions(items, guidance)


def test_a_condition_the_model_lacks_is_refused_naming_what_it_supports():
    plain = DiTConfig(d_model=32, num_layers=1, num_heads=4)
    with pytest.raises(ConfigError, match="was not trained with it; it supports no condition"):
        parse_conditions(["space_group=225"]).check(plain, "crystal")
    with pytest.raises(ConfigError, match="only crystals have a space group"):
        parse_conditions(["space_group=225"]).check(COND, "molecule")
    with pytest.raises(ConfigError, match="--guidance chemical_system: no such condition is set"):
        parse_conditions(["space_group=225"], ["chemical_system=2"]).check(COND, "crystal")
    parse_conditions(["space_group=225", "chemical_system=C-H-O"]).check(COND, "crystal")


def test_training_labels_on_real_mp20_and_qm9():
    crystals = [s for name in ("mp_20_pilot_train.csv.gz", "mp_20_pilot_val.csv.gz", "mp_20_pilot_test.csv.gz")
                for s in read_systems(FIXTURES / "mp20" / name)]
    molecules = qm9_systems(4)
    k = len(crystals)
    data = JointSystems([SystemDataset.from_systems("mp20", crystals, ("spacegroup",), 0),
                         SystemDataset.from_systems("qm9", molecules, (), 1)])
    labels = condition_labels(data)
    assert k >= 8 and labels["space_group"].shape == (k + 4,) and labels["elements"].shape == (k + 4, NUM_ELEMENT_TYPES)
    # MP-20's own labels where it has them, none for molecules
    assert list(labels["space_group"][:k]) == [int(s.info["spacegroup"]) for s in crystals]
    assert list(labels["space_group"][k:]) == [0] * 4
    for row, system in zip(labels["elements"], crystals + molecules):
        assert set(np.nonzero(row)[0] + 1) == set(system.numbers.tolist())
    # without the column, spglib at symprec 0.1 gives MP's number for these crystals
    unlabelled = condition_labels(JointSystems([SystemDataset.from_systems("x", crystals, (), 0)]))
    agree = np.mean(unlabelled["space_group"] == labels["space_group"][:k])
    assert agree >= 0.75, (unlabelled["space_group"], labels["space_group"][:k])


def _dit(cfg, seed=0):
    torch.manual_seed(seed)
    dit = DiT(cfg).eval()
    for p in dit.parameters():  # a trained-looking model: no zero layers left
        p.data.add_(0.05 * torch.randn_like(p))
    return dit


def test_guidance_per_condition_is_the_weighted_sum_of_its_terms():
    dit = _dit(COND)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    x = torch.randn(2, 3, COND.latent_dim)
    t = torch.full((2,), 0.3)
    conds = SampleConditions(space_group=225, chemical_system=(3, 8), guidance={"space_group": 2.0})
    terms = guidance_terms("crystal", 2, conds, 1.5, COND, "cpu")
    assert [round(w, 6) for _, w in terms] == [-0.5, -1.5, 2.0, 1.0] and abs(sum(w for _, w in terms) - 1) < 1e-9
    assert terms[2][0].space_group.tolist() == [225, 225] and terms[1][0].space_group.tolist() == [0, 0]
    assert terms[3][0].elements[0].nonzero().flatten().tolist() == [2, 7]
    expected = sum(w * dit(x, t, mask, c) for c, w in terms)
    with torch.no_grad():
        fast = GuidedDenoiser(dit, mask, None, 1.5, [0.3], terms)(x, t, None)  # precomputed modulations
        slow = GuidedDenoiser(dit, mask, None, 1.5, [0.7], terms)(x, t, None)  # off the grid: plain forwards
    torch.testing.assert_close(fast, expected.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(slow, expected.detach(), atol=1e-5, rtol=1e-5)
    # a guidance interval: outside it, one forward with every asked condition at once
    every = all_conditions("crystal", 2, conds, COND, "cpu")
    assert every.space_group.tolist() == [225, 225] and every.elements[0].nonzero().flatten().tolist() == [2, 7]
    with torch.no_grad():
        window = GuidedDenoiser(dit, mask, None, 1.5, [0.3, 0.7], terms, interval=(0.0, 0.5), unguided=every)
        torch.testing.assert_close(window(x, t, None), expected.detach(), atol=1e-5, rtol=1e-5)
        late = torch.full((2,), 0.7)
        torch.testing.assert_close(window(x, late, None), dit(x, late, mask, every) * mask[..., None],
                                   atol=1e-5, rtol=1e-5)
    # no optional condition: plain classifier-free guidance, as before
    plain = guidance_terms("crystal", 2, None, 2.0, COND, "cpu")
    assert [w for _, w in plain] == [-1.0, 2.0]
    # the count the sampler budgets its batches and summary with
    assert num_guidance_terms(conds, 1.5) == len(terms) == 4 and num_guidance_terms(None, 2.0) == len(plain)
    assert num_guidance_terms(None, 1.0) == len(guidance_terms("crystal", 2, None, 1.0, COND, "cpu")) == 1


def test_new_condition_embedders_start_at_zero_so_a_fine_tune_starts_as_its_base_model():
    base_cfg = DiTConfig(d_model=32, num_layers=1, num_heads=4)
    base = _dit(base_cfg)
    torch.manual_seed(5)
    tuned = DiT(COND).eval()
    missing, unexpected = tuned.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("c_embed.space_group", "c_embed.elements")) for k in missing)
    mask = torch.ones(3, 4, dtype=torch.bool)
    x, t = torch.randn(3, 4, 8), torch.rand(3)
    plain = guidance_terms("crystal", 3, None, 1.0, base_cfg, "cpu")[0][0]
    full = guidance_terms("crystal", 3, SampleConditions(space_group=12, chemical_system=(8, 26)), 2.0, COND,
                          "cpu")[-1][0]
    with torch.no_grad():
        torch.testing.assert_close(tuned(x, t, mask, full), base(x, t, mask, plain))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("conditions")
    mp = pytest.MonkeyPatch()
    mp.setenv("ADIT_MP20_DIR", str(FIXTURES / "mp20"))
    mp.setenv("ADIT_QM9_DIR", str(FIXTURES / "qm9"))
    mp.setenv("ADIT_CACHE_DIR", str(root / "cache"))
    tiny = {"vae": {"d_model": 32, "num_layers": 1, "num_heads": 4},
            "dit": {"d_model": 32, "num_layers": 1, "num_heads": 4},
            "flow": {"steps": 3},
            "train": {"batch_size": 8, "val_every": 0, "val_size": 0, "val_samples": 0, "log_every": 2}}
    (root / "tiny.json").write_text(json.dumps(tiny))
    assert main(["train-vae", "--dataset", "joint", "--out-dir", str(root / "vae"), "--settings",
                 str(root / "tiny.json"), "--max-steps", "2", "--quiet"]) == 0
    assert main(["train-dit", "--vae", str(root / "vae" / "vae.safetensors"), "--dataset", "joint", "--out-dir",
                 str(root / "base"), "--settings", str(root / "tiny.json"), "--max-steps", "2", "--quiet"]) == 0
    yield root
    mp.undo()


def test_fine_tune_with_new_conditions_then_sample_under_them(env, capsys):
    root = env
    (root / "cond.json").write_text(json.dumps({"dit": {"num_space_groups": 230, "num_element_types": 100},
                                                "train": {"batch_size": 8, "val_every": 0, "val_size": 0,
                                                          "val_samples": 0, "log_every": 2}}))
    base = root / "base" / "dit.safetensors"
    assert main(["train-dit", "--vae", str(base), "--init", str(base), "--dataset", "joint", "--out-dir",
                 str(root / "cond"), "--settings", str(root / "cond.json"), "--max-steps", "2", "--quiet"]) == 0
    out = root / "s.extxyz"
    rc = main(["sample", "--checkpoint", str(root / "cond" / "dit.safetensors"), "--kind", "crystal",
               "--num-samples", "3", "--steps", "2", "--condition", "space_group=225", "--condition",
               "chemical_system=Li-Fe-O", "--guidance", "space_group=2", "--out", str(out), "--quiet"])
    assert rc == 0
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["conditions"] == {"space_group": 225, "chemical_system": "Li-O-Fe",
                                     "guidance": {"space_group": 2.0, "chemical_system": 1.0}}
    # the checkpoint records the atom counts of its training crystals per space group
    from adit_torch.checkpoint import read_metadata

    data = read_metadata(root / "cond" / "dit.safetensors")["data"]
    by_group = data["num_atoms_hist_by_space_group"]
    assert sum(sum(h.values()) for h in by_group.values()) == sum(data["num_atoms_hist"]["crystal"].values())
    assert all(1 <= int(g) <= 230 for g in by_group)
    assert summary["forward_passes_per_sample"] == summary["nfe"] * 4  # null, base, and one per condition
    # the unconditioned base model refuses, before any sampling, and says what it supports
    capsys.readouterr()
    rc = main(["sample", "--checkpoint", str(base), "--kind", "crystal", "--num-samples", "2",
               "--condition", "space_group=225", "--out", str(root / "x.extxyz"), "--quiet"])
    assert rc == EXIT_CODES["bad_input"]
    assert "was not trained with it; it supports no condition" in capsys.readouterr().err
    assert not (root / "x.extxyz").exists()


def test_property_conditions_parse_and_refuse_bad_values():
    from adit_torch.conditions import PROPERTIES

    c = parse_conditions(["band_gap=1.5", "e_above_hull=0", "chemical_system=Li-O"], ["band_gap=3"])
    assert c.properties == {"band_gap": 1.5, "e_above_hull": 0.0}
    assert c.keys() == ["chemical_system", "band_gap", "e_above_hull"]
    assert c.as_dict() == {"chemical_system": "Li-O", "band_gap": 1.5, "e_above_hull": 0.0,
                           "guidance": {"chemical_system": 1.0, "band_gap": 3.0, "e_above_hull": 1.0}}
    assert list(PROPERTIES) == ["formation_energy_per_atom", "band_gap", "e_above_hull",
                                "alpha", "gap", "homo", "lumo", "mu", "Cv"]
    with pytest.raises(ConfigError, match=r"band_gap is a number in eV"):
        parse_conditions(["band_gap=wide"])
    with pytest.raises(ConfigError, match=r"--condition band_gap is given twice"):
        parse_conditions(["band_gap=1", "band_gap=2"])
    with pytest.raises(ConfigError, match=r"crystals' \(MP-20\), not a molecule's"):
        parse_conditions(["band_gap=1"]).check(DiTConfig(num_properties=3), "molecule")
    with pytest.raises(ConfigError, match="was not trained with it"):
        parse_conditions(["band_gap=1"]).check(COND, "crystal")
    with pytest.raises(ConfigError, match=r"molecules' \(QM9\), not a crystal's"):
        parse_conditions(["gap=6000"]).check(DiTConfig(num_properties=9), "crystal")
    with pytest.raises(ConfigError, match="gap: this model was not trained with it"):
        parse_conditions(["gap=6000"]).check(DiTConfig(num_properties=3), "molecule")
    # a 9-slot model trained on molecules only supports their six properties, and says so
    trained_on = {"property_trained": ["alpha", "gap", "homo", "lumo", "mu", "Cv"]}
    parse_conditions(["gap=6000", "mu=2.5"]).check(DiTConfig(num_properties=9), "molecule", stats=trained_on)
    with pytest.raises(ConfigError, match=r"band_gap: this model was not trained with it; it supports alpha, gap"):
        parse_conditions(["band_gap=1"]).check(DiTConfig(num_properties=9), "crystal", stats=trained_on)


def test_property_labels_come_from_the_mp20_columns_and_molecules_have_none():
    from adit_torch.conditions import property_normalisation

    crystals = [s for name in ("mp_20_pilot_train.csv.gz", "mp_20_pilot_val.csv.gz")
                for s in read_systems(FIXTURES / "mp20" / name)]
    columns = ("spacegroup", "formation_energy_per_atom", "band_gap", "e_above_hull")
    data = JointSystems([SystemDataset.from_systems("mp20", crystals, columns, 0),
                         SystemDataset.from_systems("qm9", qm9_systems(3), (), 1)])
    labels = condition_labels(data)
    k = len(crystals)
    assert labels["properties_mask"][:k, :3].all() and not labels["properties_mask"][:k, 3:].any()
    assert not labels["properties_mask"][k:].any()  # these molecules come without QM9's property columns
    np.testing.assert_allclose(labels["properties"][:k, 1], [float(s.info["band_gap"]) for s in crystals], rtol=1e-6)
    means, stds, trained = property_normalisation(labels, 3)
    assert means[0] == pytest.approx(np.mean([float(s.info["formation_energy_per_atom"]) for s in crystals]))
    assert all(s > 0 for s in stds) and trained == ["formation_energy_per_atom", "band_gap", "e_above_hull"]


@pytest.fixture(scope="module")
def prop_model(env):
    """The base model fine-tuned 2 steps with the three crystal property slots (settings in ``prop.json``)."""
    root = env
    (root / "prop.json").write_text(json.dumps({"dit": {"num_space_groups": 230, "num_element_types": 100,
                                                        "num_properties": 3},
                                                "train": {"batch_size": 8, "val_every": 0, "val_size": 0,
                                                          "val_samples": 0, "log_every": 2}}))
    base = root / "base" / "dit.safetensors"
    assert main(["train-dit", "--vae", str(base), "--init", str(base), "--dataset", "joint", "--out-dir",
                 str(root / "prop"), "--settings", str(root / "prop.json"), "--max-steps", "2", "--quiet"]) == 0
    return root / "prop" / "dit.safetensors"


def test_train_with_properties_then_sample_under_one(env, prop_model):
    root = env
    from adit_torch.checkpoint import read_metadata

    header = read_metadata(prop_model)["data"]
    assert header["property_names"] == ["formation_energy_per_atom", "band_gap", "e_above_hull"]
    assert len(header["property_mean"]) == 3 and min(header["property_std"]) > 0
    out = root / "p.extxyz"
    assert main(["sample", "--checkpoint", str(prop_model), "--kind", "crystal",
                 "--num-samples", "3", "--steps", "2", "--condition", "band_gap=2.0", "--guidance", "band_gap=2",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["conditions"] == {"band_gap": 2.0, "guidance": {"band_gap": 2.0}}
    assert summary["forward_passes_per_sample"] == summary["nfe"] * 3


def test_molecule_properties_fine_tune_a_crystal_property_model_on_a_qm9_half(env, prop_model, capsys):
    """A 3-slot model grows to the 9 slots (QM9's six added) and trains on QM9's train_b half."""
    root = env
    settings = json.loads((root / "prop.json").read_text())
    settings["dit"]["num_properties"] = 9
    (root / "prop9.json").write_text(json.dumps(settings))
    base = root / "base" / "dit.safetensors"
    assert main(["train-dit", "--vae", str(base), "--init", str(prop_model), "--dataset",
                 "joint", "--train-split", "train_b", "--out-dir", str(root / "prop9"), "--settings",
                 str(root / "prop9.json"), "--max-steps", "2", "--quiet"]) == 0
    from adit_torch.checkpoint import read_metadata
    from adit_torch.datasets import load_dataset

    meta = read_metadata(root / "prop9" / "dit.safetensors")
    header = meta["data"]
    assert header["property_names"] == list(PROPERTIES) and header["property_trained"] == list(PROPERTIES)
    half = load_dataset("qm9", "train_b")
    assert header["num_atoms_hist"]["molecule"] == {str(n): int(c) for n, c in
                                                   zip(*np.unique(np.diff(half.offsets), return_counts=True))}
    assert meta["config"]["train"]["train_split"] == "train_b"
    i = list(PROPERTIES).index("gap")
    assert header["property_mean"][i] == pytest.approx(np.mean(half.props["gap"]), rel=1e-5)
    out = root / "gap.extxyz"
    assert main(["sample", "--checkpoint", str(root / "prop9" / "dit.safetensors"), "--kind", "molecule",
                 "--num-samples", "3", "--steps", "2", "--condition", "gap=6500", "--guidance", "gap=2",
                 "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.with_suffix(".summary.json").read_text())["conditions"] == {
        "gap": 6500.0, "guidance": {"gap": 2.0}}
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(root / "prop9" / "dit.safetensors"), "--kind", "crystal",
                 "--num-samples", "3", "--condition", "gap=6500", "--out", str(root / "x.extxyz")]) != 0
    assert "gap: this property condition is molecules' (QM9), not a crystal's" in capsys.readouterr().err


def test_grown_property_embedder_leaves_the_model_unchanged_whatever_the_new_slots_say():
    from adit_torch.dit import CRYSTAL
    from adit_torch.recipes import grow_property_embedder

    torch.manual_seed(0)
    small, big = (DiTConfig(d_model=32, num_layers=1, num_heads=4, num_properties=p) for p in (3, 9))
    old = DiT(small)
    for param in old.parameters():  # a trained model: no zero-initialised layer left
        torch.nn.init.normal_(param, std=0.3)
    new = DiT(big)
    new.load_state_dict(grow_property_embedder(old.state_dict(), big))
    old.eval(), new.eval()
    b, n = 2, 5
    x, t = torch.randn(b, n, small.latent_dim), torch.rand(b)
    mask = torch.ones(b, n, dtype=torch.bool)
    values3, mask3 = torch.randn(b, 3), torch.tensor([[True, False, True], [False, True, True]])
    values9 = torch.cat([values3, torch.randn(b, 6)], dim=1)  # whatever the new slots hold
    mask9 = torch.cat([mask3, torch.ones(b, 6, dtype=torch.bool)], dim=1)
    periodic = torch.full((b,), CRYSTAL)
    with torch.no_grad():
        want = old(x, t, mask, Condition(periodic=periodic, properties=values3 * mask3, properties_mask=mask3))
        got = new(x, t, mask, Condition(periodic=periodic, properties=values9 * mask9, properties_mask=mask9))
        moved = old(x, t, mask, Condition(periodic=periodic, properties=values3 * mask3 + 1, properties_mask=mask3))
    torch.testing.assert_close(got, want)
    assert (moved - want).abs().max() > 1e-3  # the stored slots do steer the model
    with pytest.raises(Exception, match="more than the 3 asked for"):
        grow_property_embedder(new.state_dict(), small)


def test_a_property_term_sets_its_normalised_target_and_only_its_mask():
    cfg = DiTConfig(d_model=32, num_layers=1, num_heads=4, num_properties=3)
    stats = {"property_mean": [-1.0, 1.0, 0.1], "property_std": [1.0, 2.0, 0.2]}
    terms = guidance_terms("crystal", 2, parse_conditions(["band_gap=3.0"]), 2.0, cfg, "cpu", stats)
    (null, _), (base, _), (full, weight) = terms
    assert weight == 1.0 and not base.properties_mask.any() and not null.properties_mask.any()
    assert full.properties_mask.tolist() == [[False, True, False]] * 2
    assert full.properties[:, 1].tolist() == [1.0, 1.0]  # (3.0 - 1.0) / 2.0
    from adit_torch.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no property normalisation"):
        guidance_terms("crystal", 2, parse_conditions(["band_gap=3.0"]), 2.0, cfg, "cpu", {})


def test_formula_and_num_atoms_parse_into_constraints_and_refuse_bad_values():
    c = parse_conditions(["formula=Li2Fe2O4", "num_atoms=12"], ["formula=2"])
    assert c.formula == {3: 1, 26: 1, 8: 2} and c.formula_size() == 4 and c.num_atoms == 12
    assert c.chemical_system == (3, 8, 26)  # the formula's elements are its chemical system
    assert c.keys() == ["chemical_system"] and c.constraint_keys() == ["formula", "num_atoms"]
    assert c.scale("chemical_system") == 2.0
    assert c.as_dict() == {"chemical_system": "Li-O-Fe", "formula": "LiFeO2", "num_atoms": 12,
                           "guidance": {"chemical_system": 2.0}}
    assert parse_conditions(["num_atoms=7"]).keys() == []
    for items, guidance, match in [
        (["formula=Xx2O"], None, "not a chemical formula"),
        (["formula=LiFeO2", "num_atoms=6"], None, "num_atoms=6 is not a multiple of formula=LiFeO2's 4 atoms"),
        (["formula=LiFeO2", "chemical_system=Li-O"], None, "formula=LiFeO2 has elements outside chemical_system"),
        (["num_atoms=0"], None, "an integer 1..1000"),
        (["num_atoms=twelve"], None, "an integer 1..1000"),
        (["formula=LiFeO2", "formula=MgO"], None, "given twice"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_conditions(items, guidance)
    with pytest.raises(ConfigError, match="needs a model trained with chemical_system"):
        parse_conditions(["formula=MgO"]).check(DiTConfig(num_space_groups=230), "crystal")
    with pytest.raises(ConfigError, match="num_atoms: the number of atoms is exact"):
        parse_conditions(["num_atoms=8"], ["num_atoms=2"]).check(COND, "crystal")
    with pytest.raises(ConfigError, match="a multiple of its 2 atoms; \\[5\\] is not one"):
        parse_conditions(["formula=MgO"]).check_sizes([4, 5])


def test_assign_types_keeps_to_the_set_and_to_the_exact_counts_at_best_log_probability():
    from itertools import permutations

    from adit_torch.conditions import assign_types

    logits = torch.randn(6, NUM_ELEMENT_TYPES, generator=torch.Generator().manual_seed(0))
    logits[:, 55] += 10.0  # Ba is the decoder's favourite everywhere: it must never appear
    free = assign_types(logits)
    assert (free == 56).all()
    inside = assign_types(logits, (8, 12))
    assert set(inside.tolist()) <= {8, 12}
    logp = torch.log_softmax(logits, -1).numpy()
    np.testing.assert_array_equal(inside, np.where(logp[:, 7] >= logp[:, 11], 8, 12))
    exact = assign_types(logits, (8, 12), {8: 1, 12: 1})
    assert sorted(exact.tolist()) == [8, 8, 8, 12, 12, 12]
    # the best of all 20 placements of three O and three Mg
    best = max(set(permutations([8, 8, 8, 12, 12, 12])), key=lambda p: sum(logp[i, z - 1] for i, z in enumerate(p)))
    assert exact.tolist() == list(best)
    with pytest.raises(ConfigError, match="not a multiple"):
        assign_types(logits[:5], (8, 12), {8: 1, 12: 1})


def test_a_property_target_beyond_the_training_data_warns_with_the_range():
    from adit_torch.conditions import warn_out_of_range

    stats = {"property_mean": [-1.0, 1.0, 0.1], "property_std": [1.0, 2.0, 0.2]}
    with pytest.warns(UserWarning, match=r"band_gap=9 lies outside .* -5..7 eV"):
        warn_out_of_range(parse_conditions(["band_gap=9"]), stats)
    assert warn_out_of_range(parse_conditions(["band_gap=3"]), stats) == []


def test_shipped_model_samples_an_exact_formula_inside_its_chemical_system(tmp_path):
    """The acceptance commands on the shipped conditioned model: formula and chemical system by the CLI."""
    import ase.io

    from adit_torch.conditions import reduced_formula_of

    out = tmp_path / "lfo.extxyz"
    assert main(["sample", "--model", "adit-xs-joint-cond", "--kind", "crystal", "--num-samples", "6",
                 "--steps", "4", "--solver", "heun", "--condition", "formula=LiFeO2", "--out", str(out),
                 "--quiet"]) == 0
    systems = ase.io.read(out, index=":")  # raw samples: some overlap, which read_systems refuses
    assert len(systems) == 6
    for s in systems:
        assert reduced_formula_of(s.numbers) == {3: 1, 8: 2, 26: 1} and len(s) % 4 == 0
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["conditions"]["formula"] == "LiFeO2"
    out = tmp_path / "mgo.extxyz"
    assert main(["sample", "--model", "adit-xs-joint-cond", "--kind", "crystal", "--num-samples", "6",
                 "--steps", "4", "--solver", "heun", "--condition", "chemical_system=Mg-O", "--condition",
                 "num_atoms=6", "--out", str(out), "--quiet"]) == 0
    systems = ase.io.read(out, index=":")
    assert len(systems) == 6 and all(set(s.numbers.tolist()) <= {8, 12} and len(s) == 6 for s in systems)
    assert json.loads(out.with_suffix(".summary.json").read_text())["settings"]["num_atoms"] == 6
