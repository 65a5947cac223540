"""Training configs: JSON data, where a stage names the config it varies (``"extends"``) and gives only what differs.

A stage's parallel run or the next stage usually changes a few weights, the seed and the steps; writing the
whole config again hides those few lines among a hundred copied ones.
"""

from __future__ import annotations

import json
from pathlib import Path


class ConfigError(ValueError):
    """A config that cannot be read: a missing parent, a cycle of ``extends``."""


def merged(base: dict, override: dict) -> dict:
    """``override`` laid over ``base``: nested objects merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The config at ``path`` with its ``extends`` chain resolved (parents are relative to the file naming them)."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _seen:
        raise ConfigError(f"{path}: 'extends' comes back to itself")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config") from exc
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return merged(load_config(path.parent / parent, (*_seen, resolved)), data)
