"""Exceptions of adit_torch. Every message names what is wrong and where."""


class AditError(Exception):
    """Base class of all errors raised on purpose by adit_torch."""


class InvalidSystemError(AditError, ValueError):
    """A structure is malformed: no atoms, unknown element, NaN, singular lattice, overlaps, too large."""


class DataFormatError(AditError, ValueError):
    """A data file cannot be read; the message names the file and the row or structure."""


class CheckpointError(AditError):
    """A checkpoint is missing, corrupt or of the wrong kind."""


class ConfigError(AditError, ValueError):
    """A configuration value is impossible or inconsistent."""
