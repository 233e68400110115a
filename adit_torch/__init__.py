"""adit_torch: the All-atom Diffusion Transformer for molecules and crystals (pure PyTorch + chemistry).

This package never imports AiiDA. The AiiDA plugin lives in :mod:`aiida_adit`.
"""

__version__ = "0.2.0"

from adit_torch.errors import AditError, CheckpointError, ConfigError, DataFormatError, InvalidSystemError  # noqa: E402
from adit_torch.system import AtomicSystem  # noqa: E402

__all__ = [
    "AditError",
    "AtomicSystem",
    "CheckpointError",
    "ConfigError",
    "DataFormatError",
    "InvalidSystemError",
    "__version__",
]
