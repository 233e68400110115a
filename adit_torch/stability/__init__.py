"""Metastability of crystals: relaxation with a machine-learned potential, energy above hull, S.U.N. rates.

Modules: :mod:`~adit_torch.stability.potentials` (the potential interface and
CHGNet), :mod:`~adit_torch.stability.relax` (relaxation with flags),
:mod:`~adit_torch.stability.hull` (reference hulls and energies above hull),
:mod:`~adit_torch.stability.mp2023` (the Matbench Discovery MP hull, optional),
:mod:`~adit_torch.stability.rates` (stable / metastable / S.U.N. rates).
"""
