"""SPIRE: optional diffusion restoration driven by a semantic and a restoration prompt.

Importing this package is cheap and never needs ``diffusers``: the app and the
plug-in call ``available()`` to decide whether to offer the mode, and only
touch ``SpirePipeline`` (imported lazily) when it is offered. No SPIRE weights
are public: an adapter has to be trained (``python -m engine.spire.train``,
see docs/spire.md) or supplied, and is found through ``find_adapter()``.
"""

from __future__ import annotations

from engine.spire.adapters import ADAPTER_ENV, adapter_search_path, available, find_adapter, install_dir

__all__ = ["ADAPTER_ENV", "adapter_search_path", "available", "find_adapter", "install_dir", "SpirePipeline",
           "SpireAdapter"]


def __getattr__(name: str):
    if name in ("SpirePipeline", "load_base"):
        from engine.spire import pipeline

        return getattr(pipeline, name)
    if name in ("SpireAdapter", "SpireDenoiser", "AdapterError", "ModulationFusion", "SkipModulator"):
        from engine.spire import model

        return getattr(model, name)
    raise AttributeError(f"module 'engine.spire' has no attribute {name!r}")
