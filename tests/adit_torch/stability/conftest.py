"""Shared fixtures of the stability tests: CHGNet loaded once, small real MP-20 crystals."""

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "stability"


@pytest.fixture(scope="session")
def chgnet():
    """The default CHGNet potential (weights from the installed wheel), loaded once."""
    from adit_torch.stability.potentials import get_potential

    potential = get_potential("chgnet")
    potential.model  # noqa: B018 - load now, not inside the first test
    return potential


@pytest.fixture(scope="session")
def mp20_small():
    """Thirteen real MP-20 crystals of at most 6 atoms (``info['id']`` = material id), in file order."""
    from adit_torch.io import read_systems

    return list(read_systems(FIXTURES / "mp20_small.csv"))


@pytest.fixture()
def by_id(mp20_small):
    """Look a fixture crystal up by material id (a fresh copy)."""
    table = {s.info["id"]: s for s in mp20_small}
    return lambda mid: table[mid].copy()
