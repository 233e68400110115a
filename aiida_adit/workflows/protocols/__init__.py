"""Protocols: named input presets (fast / moderate / precise) read from YAML, merged with overrides.

Each work chain names its YAML file here (``<name>.yaml``); the file holds a
``default_protocol`` and a ``protocols`` mapping. ``get_builder_from_protocol``
of a work chain starts from the chosen protocol and merges the user's
``overrides`` on top (nested dicts are merged key by key; anything else replaces).
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

from adit_torch.errors import ConfigError


@functools.cache
def _load(name: str) -> dict[str, Any]:
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or "protocols" not in data or "default_protocol" not in data:
        raise ConfigError(f"protocol file {name}.yaml needs `default_protocol` and `protocols`")
    return data


def recursive_merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``left`` updated by ``right``, merging nested dicts key by key."""
    merged = copy.deepcopy(left)
    for key, value in right.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = recursive_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class ProtocolMixin:
    """Adds protocol look-ups to a work chain whose YAML file is ``_protocol_file``."""

    _protocol_file: str = ""

    @classmethod
    def get_available_protocols(cls) -> dict[str, str]:
        """``{name: description}`` of the protocols of this work chain."""
        return {name: spec.get("description", "") for name, spec in _load(cls._protocol_file)["protocols"].items()}

    @classmethod
    def get_default_protocol(cls) -> str:
        """The protocol used when none is named."""
        return _load(cls._protocol_file)["default_protocol"]

    @classmethod
    def get_protocol_inputs(cls, protocol: str | None = None, overrides: dict[str, Any] | None = None) -> dict:
        """The inputs of ``protocol`` (default protocol when None) merged with ``overrides``.

        :raises ConfigError: unknown protocol name (the message lists the known ones).
        """
        data = _load(cls._protocol_file)
        name = protocol or data["default_protocol"]
        if name not in data["protocols"]:
            raise ConfigError(f"unknown protocol {name!r}; choose one of {', '.join(data['protocols'])}")
        inputs = {key: value for key, value in data["protocols"][name].items() if key != "description"}
        return recursive_merge(inputs, overrides or {})
