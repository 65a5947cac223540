"""Finding a SPIRE adapter and telling whether the mode can run, without importing torch or diffusers."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

ADAPTER_ENV = "INSTRUCTIR_SPIRE_ADAPTER"
ADAPTER_DIRNAME = "spire"
_CONFIG_FILE = "spire_adapter.json"  # = engine.spire.model.CONFIG_FILE, without importing torch/diffusers

def install_dir() -> Path:
    """Where a user installs an adapter: ``spire/`` in the app's data folder (the one the desktop app uses)."""
    if data := os.environ.get("INSTRUCTIR_STUDIO_DATA"):
        return Path(data) / ADAPTER_DIRNAME
    import platformdirs

    return Path(platformdirs.user_data_dir("instructir-studio", "InstructIR")) / ADAPTER_DIRNAME


def adapter_search_path() -> list[Path]:
    """Where an installed adapter is looked for, first match wins: the env override, the data folder, resources."""
    from engine.model.registry import bundled_models_dir

    env = os.environ.get(ADAPTER_ENV)
    return [*([Path(env)] if env else []), install_dir(), bundled_models_dir() / ADAPTER_DIRNAME]


def find_adapter() -> Path | None:
    """The first folder on ``adapter_search_path()`` that holds an adapter config, or None."""
    for folder in adapter_search_path():
        if (folder / _CONFIG_FILE).is_file():
            return folder
    return None


def _missing_packages() -> list[str]:
    return [name for name in ("diffusers", "transformers") if importlib.util.find_spec(name) is None]


def _base_is_local(base: str) -> bool:
    """True when ``base`` is a folder, or a hub id whose UNet config is already in the local cache."""
    if Path(base).expanduser().is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(base, "unet/config.json"), str)
    except Exception:  # an invalid id or a broken cache just means "not local"
        return False


def available(adapter: str | os.PathLike | None = None) -> tuple[bool, str]:
    """Whether SPIRE mode can run here, and a sentence for the user saying why not (or what to expect).

    Checks, cheaply and without loading any weights: the optional packages,
    an installed (or given) adapter, its base model on disk, and a GPU (without
    one the mode still runs, slowly, and the reason says so).
    """
    if missing := _missing_packages():
        if getattr(sys, "frozen", False):  # a packaged app: pip means nothing to its user
            return False, ("This build of InstructIR Studio has no SPIRE mode "
                           "(it is built with INSTRUCTIR_BUILD_SPIRE=1).")
        return False, (f"SPIRE mode needs the optional packages {', '.join(missing)}: "
                       "pip install 'instructir-studio[spire]'")
    folder = Path(adapter) if adapter is not None else find_adapter()
    if folder is None:
        return False, ("No SPIRE adapter is installed. SPIRE weights are not public: train one "
                       f"(python -m engine.spire.train, see docs/spire.md) and put it in {install_dir()}, "
                       f"or set {ADAPTER_ENV}.")
    try:
        config = json.loads((folder / _CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return False, f"The SPIRE adapter in {folder} is unreadable: {exc}"
    base = config.get("base_model") or ""
    if not base:
        return False, f"The SPIRE adapter in {folder} does not name its base model."
    if not _base_is_local(base):
        return False, (f"The SPIRE adapter needs its base model {base!r}, which is not on this computer: "
                       f"download it once (huggingface-cli download {base}) or point the adapter at a local copy.")
    import torch

    if torch.cuda.is_available():
        return True, f"SPIRE runs on the GPU ({torch.cuda.get_device_name(0)})."
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return True, "SPIRE runs on the Apple GPU (expect about a minute per photo)."
    return True, "No GPU found: SPIRE will run on the CPU and take many minutes per photo."
