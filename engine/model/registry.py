"""Where models come from: the bundled model, the official 7D weights, local folders.

A model on disk in our own format is one folder:
``model.safetensors`` (``image_model.*`` and ``lm_head.*`` tensors, config in the
metadata, the same layout as the reference golden file) plus ``model_card.json``
(and a human-readable ``README.md``). The official weights stay in their own
format (``im_instructir-7d.pt``, ``lm_instructir-7d.pt``, ``bge-micro-v2/``).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from engine.errors import StudioError
from engine.io.atomic import atomic_path, write_text
from engine.model.network import INTENT_CLASSES, OFFICIAL_7D_CONFIG, LMHead, build_lm_head
from engine.model.text import OFFICIAL_ENCODER

DEFAULT_MODEL = "studio-small"
OFFICIAL_MODEL = "instructir-7d"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"


class ModelNotFoundError(StudioError, RuntimeError):
    """The named model is not installed (or not a model folder)."""

    code = "model-not-found"


def resources_dir() -> Path:
    """The ``resources/`` folder: env override, a PyInstaller bundle, or the source tree."""
    if env := os.environ.get("INSTRUCTIR_RESOURCES"):
        return Path(env)
    if bundle := getattr(sys, "_MEIPASS", None):
        return Path(bundle) / "resources"
    return Path(str(importlib.resources.files("resources")))


def bundled_models_dir() -> Path:
    return resources_dir() / "models"


@dataclass
class ModelBundle:
    """Everything needed to build a restorer: network config, weights, text encoder, classes."""

    name: str
    config: dict
    classes: tuple[str, ...]
    encoder: str
    image_state: dict[str, torch.Tensor]
    head_state: dict[str, torch.Tensor]
    head_config: dict = field(default_factory=lambda: {"embedding_dim": 384, "hidden_dim": 256})
    card: dict = field(default_factory=dict)

    @property
    def no_op_classes(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if c == "unrelated")

    def build_head(self) -> LMHead:
        """The projection + intent head with these weights, in eval mode."""
        head = build_lm_head(num_classes=len(self.classes), **{
            k: v for k, v in self.head_config.items() if k != "num_classes"})
        head.load_state_dict(self.head_state, strict=True)
        return head.eval()


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str  # "bundled" | "official" | "local"
    available: bool
    description: str
    path: Path | None = None


def _split_state(tensors: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    image = {k.removeprefix("image_model."): v.float() for k, v in tensors.items() if k.startswith("image_model.")}
    head = {k.removeprefix("lm_head."): v.float() for k, v in tensors.items() if k.startswith("lm_head.")}
    return image, head


def load_folder(folder: Path) -> ModelBundle:
    """Load a model folder in our format (``model.safetensors`` + ``model_card.json``)."""
    from safetensors import safe_open

    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelNotFoundError(f"{folder} is not a model folder: {WEIGHTS_FILE} is missing")
    with safe_open(str(weights), "pt") as fh:
        meta = fh.metadata() or {}
    image, head = _split_state(load_file(str(weights)))
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8")) if (folder / CARD_FILE).is_file() else {}
    encoder = meta.get("text_encoder") or card.get("text_encoder", "all-MiniLM-L6-v2")
    local_encoder = folder / encoder
    return ModelBundle(
        name=card.get("name", folder.name),
        config=json.loads(meta["config"]),
        classes=tuple(json.loads(meta.get("classes", json.dumps(INTENT_CLASSES)))),
        encoder=str(local_encoder) if local_encoder.is_dir() else encoder,
        image_state=image,
        head_state=head,
        head_config=json.loads(meta.get("lm_head", '{"embedding_dim": 384, "hidden_dim": 256}')),
        card=card,
    )


def save_folder(bundle: ModelBundle, folder: Path, *, half: bool = False) -> Path:
    """Write a bundle in our format (fp16 tensors when ``half``); returns the weights path."""
    folder.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    tensors = {f"image_model.{k}": v.detach().to(dtype).contiguous() for k, v in bundle.image_state.items()}
    tensors |= {f"lm_head.{k}": v.detach().to(dtype).contiguous() for k, v in bundle.head_state.items()}
    meta = {
        "config": json.dumps(bundle.config),
        "lm_head": json.dumps({**bundle.head_config, "num_classes": len(bundle.classes)}),
        "classes": json.dumps(list(bundle.classes)),
        "text_encoder": bundle.encoder,
    }
    with atomic_path(folder / WEIGHTS_FILE, mode=0o644) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    card = {"name": bundle.name, "config": bundle.config, "classes": list(bundle.classes),
            "text_encoder": bundle.encoder, **{k: v for k, v in bundle.card.items() if k not in ("name",)}}
    write_text(folder / CARD_FILE, json.dumps(card, indent=2) + "\n", mode=0o644)
    return folder / WEIGHTS_FILE


def load_official(files) -> ModelBundle:
    """Wrap the published 7D checkpoints (``engine.model.hub.OfficialFiles``) as a bundle."""
    image = torch.load(files.image_weights, map_location="cpu", weights_only=True)
    head = torch.load(files.head_weights, map_location="cpu", weights_only=True)
    return ModelBundle(
        name=OFFICIAL_MODEL,
        config=dict(OFFICIAL_7D_CONFIG),
        classes=INTENT_CLASSES,
        encoder=str(files.encoder_dir),
        image_state=dict(image),
        head_state=dict(head),
        card={"source": "marcosv/InstructIR", "text_encoder": OFFICIAL_ENCODER},
    )


def _is_official_folder(folder: Path) -> bool:
    from engine.model import hub

    return (folder / hub.IMAGE_WEIGHTS).is_file() or (folder / hub.HEAD_WEIGHTS).is_file()


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, *, allow_download: bool = False,
               progress: bool = True) -> ModelBundle:
    """Resolve a model name or folder to a loaded bundle.

    ``instructir-7d`` is taken from the Hugging Face cache, downloaded when
    ``allow_download``, or else fails with a message that says how to get it.
    """
    from engine.model import hub

    text = str(name_or_path)
    if text in ("default", "bundled"):
        text = DEFAULT_MODEL
    if text == OFFICIAL_MODEL:
        files = hub.official_from_cache()
        if files is None:
            if not allow_download:
                raise ModelNotFoundError(
                    f"The official {OFFICIAL_MODEL} weights are not downloaded yet. Run "
                    f"'instructir models download {OFFICIAL_MODEL}', or put {hub.IMAGE_WEIGHTS}, "
                    f"{hub.HEAD_WEIGHTS} and {hub.ENCODER_DIRNAME}/ in a folder and pass that folder as the model."
                )
            files = hub.download_official(progress=progress)
        return load_official(files)
    bundled = bundled_models_dir() / text
    if (bundled / WEIGHTS_FILE).is_file():
        return load_folder(bundled)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".safetensors":
        return load_folder(path.parent)
    if path.is_dir():
        if _is_official_folder(path):
            return load_official(hub.official_from_folder(path))
        return load_folder(path)
    known = ", ".join(e.name for e in list_models())
    raise ModelNotFoundError(f"Unknown model {text!r}. Known models: {known}; or give a model folder.")


def list_models() -> list[ModelEntry]:
    """Bundled models, then the official weights (available when cached)."""
    from engine.model import hub

    entries = []
    root = bundled_models_dir()
    for folder in sorted(root.glob("*/")) if root.is_dir() else []:
        if (folder / WEIGHTS_FILE).is_file():
            card = json.loads((folder / CARD_FILE).read_text()) if (folder / CARD_FILE).is_file() else {}
            entries.append(ModelEntry(folder.name, "bundled", True, card.get("summary", "bundled model"), folder))
    try:
        cached = hub.official_from_cache()
    except Exception:  # noqa: BLE001 - a broken cache only means "not available"
        cached = None
    entries.append(ModelEntry(OFFICIAL_MODEL, "official", cached is not None,
                              "published InstructIR-7D weights (download ~60 MB)",
                              cached.image_weights.parent if cached else None))
    return entries
