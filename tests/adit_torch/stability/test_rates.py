"""Stable / metastable / S.U.N. / M.S.U.N. rates from energies above hull and evaluation records."""

import pytest

from adit_torch.errors import ConfigError
from adit_torch.stability.rates import classify, stability_rates


def test_thresholds_are_inclusive_and_exclusive_as_published():
    assert classify(0.0) == (True, True)  # stable: E_hull <= 0
    assert classify(1e-6) == (False, True)
    assert classify(0.1) == (False, False)  # metastable: E_hull < 0.1
    assert classify(-0.3) == (True, True)
    assert classify(None) == (False, False)
    assert classify(0.04, stable_threshold=0.05) == (True, True)


def test_rates_count_every_input_and_name_their_conventions():
    e_hull = [-0.02, 0.0, 0.05, 0.2, None]
    out = stability_rates(e_hull, potential="chgnet-0.3.0", hull="offline-mp20-chgnet")
    assert out["stable_rate"] == pytest.approx(2 / 5)
    assert out["metastable_rate"] == pytest.approx(3 / 5)
    assert out["sun_rate"] is None and out["msun_rate"] is None
    assert out["counts"] == {"structures": 5, "with_e_hull": 4, "stable": 2, "metastable": 3, "sun": None,
                             "msun": None}
    assert out["potential"] == "chgnet-0.3.0" and out["hull"] == "offline-mp20-chgnet"
    assert out["thresholds"]["metastable_e_hull_below_ev_per_atom"] == 0.1
    lo, hi = out["intervals"]["stable_rate"]
    assert lo < 0.4 < hi


def test_sun_counts_each_novel_group_once():
    e_hull = [-0.01, -0.02, 0.05, 0.03, 0.0, 0.3]
    evaluation = [
        {"valid": True, "unique_group": 0, "novel": True},   # stable, novel
        {"valid": True, "unique_group": 0, "novel": True},   # duplicate of 0: not counted twice
        {"valid": True, "unique_group": 1, "novel": True},   # metastable only
        {"valid": True, "unique_group": 2, "novel": False},  # known structure
        {"valid": False, "reasons": ["composition"]},         # invalid: never S.U.N.
        {"valid": True, "unique_group": 3, "novel": True},   # unstable
    ]
    out = stability_rates(e_hull, evaluation)
    assert out["counts"]["sun"] == 1 and out["counts"]["msun"] == 2
    assert out["sun_rate"] == pytest.approx(1 / 6) and out["msun_rate"] == pytest.approx(2 / 6)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ConfigError, match="2 evaluation records for 3 energies"):
        stability_rates([0.0, 0.1, 0.2], [{"valid": True}, {"valid": True}])
