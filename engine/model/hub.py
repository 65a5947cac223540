"""Getting the official InstructIR-7D weights: Hugging Face cache, download, or a local folder.

The published model is three things from two Hub repos: the image network and the text head
(``marcosv/InstructIR``) plus the bge-micro-v2 sentence encoder (``TaylorAI/bge-micro-v2``).
Downloads go through huggingface_hub's normal API into its normal cache, so files fetched by
other tools are reused and nothing is fetched twice. Because ``.pt`` files are pickles that we
load, both are sha256-checked after every download: against pinned hashes when we have them and
against the sha256 the Hub itself advertises for the LFS object; a bad copy is evicted from the
cache so that a retry fetches it again instead of loading the same corrupt blob forever.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import EntryNotFoundError
from huggingface_hub.utils import tqdm as hf_tqdm

from engine.errors import StudioError

OFFICIAL_REPO = "marcosv/InstructIR"
ENCODER_REPO = "TaylorAI/bge-micro-v2"
IMAGE_WEIGHTS = "im_instructir-7d.pt"
HEAD_WEIGHTS = "lm_instructir-7d.pt"
ENCODER_DIRNAME = "bge-micro-v2"

#: Pinned sha256 of the official checkpoints ({filename: hex digest}); used when the caller gives none.
#: Empty until someone verifies the published files; the Hub's own LFS hash is always checked anyway.
KNOWN_SHA256: dict[str, str] = {}

#: Weights for other frameworks in the encoder repo: sentence-transformers (PyTorch) never reads them.
ENCODER_IGNORE_PATTERNS: list[str] = [
    "*.onnx",
    "onnx/*",
    "openvino/*",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.tflite",
    "*.gguf",
    "coreml/*",
]

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_HUB = "https://huggingface.co"


class ModelDownloadError(StudioError, RuntimeError):
    """The official weights could not be obtained; the message says what to fetch and where to put it.

    Built from a one-line *cause*; the rest of the message is the fixed how-to-get-it-offline help,
    so every caller (CLI, GUI, GIMP plug-in) shows the user the same actionable text.
    """

    code = "download"

    def __init__(self, cause: str) -> None:
        self.cause = _one_line(cause)
        super().__init__(
            f"Could not get the official InstructIR-7D model: {self.cause}\n"
            f"It needs {IMAGE_WEIGHTS} and {HEAD_WEIGHTS} from {_HUB}/{OFFICIAL_REPO} and the "
            f"sentence-transformers folder {_HUB}/{ENCODER_REPO}.\n"
            "To use it offline, download them elsewhere and put them in one local folder:\n"
            f"  <folder>/{IMAGE_WEIGHTS}\n"
            f"  <folder>/{HEAD_WEIGHTS}\n"
            f"  <folder>/{ENCODER_DIRNAME}/   (the whole {ENCODER_REPO} repository: config.json, model weights, "
            "tokenizer files, modules.json, 1_Pooling/)\n"
            "then pass that folder as the model."
        )


class ChecksumError(ModelDownloadError):
    """A weights file does not hash to what it should: corrupt or tampered, never load it."""

    def __init__(self, filename: str, expected: str, actual: str, *, against: str, removed: bool) -> None:
        self.filename, self.expected, self.actual = filename, expected, actual
        fix = "the bad copy was removed from the cache, retry the download" if removed else "replace the file"
        super().__init__(
            f"{filename} failed its sha256 check against {against}: expected {expected}, got {actual} ({fix})"
        )


@dataclass(frozen=True)
class OfficialFiles:
    """Local paths of the three parts of the official model."""

    image_weights: Path
    head_weights: Path
    encoder_dir: Path


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed so that big checkpoints do not sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def official_from_folder(folder: str | os.PathLike[str]) -> OfficialFiles:
    """The local-folder layout (for offline machines): both ``.pt`` files plus ``bge-micro-v2/``."""
    root = Path(folder).expanduser()
    files = OfficialFiles(root / IMAGE_WEIGHTS, root / HEAD_WEIGHTS, root / ENCODER_DIRNAME)
    missing = [name for name, path in ((IMAGE_WEIGHTS, files.image_weights), (HEAD_WEIGHTS, files.head_weights))
               if not path.is_file()]
    if not (files.encoder_dir / "config.json").is_file():
        missing.append(f"{ENCODER_DIRNAME}/ (folder with config.json)")
    if missing:
        raise ModelDownloadError(f"the folder {root} is missing: {', '.join(missing)}")
    return files


def official_from_cache(cache_dir: str | os.PathLike[str] | None = None) -> OfficialFiles | None:
    """The official files if the Hugging Face cache already holds all of them, else None (never the network)."""
    try:
        image = hf_hub_download(OFFICIAL_REPO, IMAGE_WEIGHTS, cache_dir=cache_dir, local_files_only=True)
        head = hf_hub_download(OFFICIAL_REPO, HEAD_WEIGHTS, cache_dir=cache_dir, local_files_only=True)
        encoder = snapshot_download(ENCODER_REPO, cache_dir=cache_dir, local_files_only=True,
                                    ignore_patterns=ENCODER_IGNORE_PATTERNS)
    except (OSError, EntryNotFoundError):  # LocalEntryNotFoundError / IncompleteSnapshotError: not (fully) cached
        return None
    return OfficialFiles(Path(image), Path(head), Path(encoder))


def download_official(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    endpoint: str | None = None,
    expected_sha256: dict[str, str] | None = None,
) -> OfficialFiles:
    """Download (or reuse from the HF cache) and verify the official weights.

    One quick metadata request per checkpoint comes first: it yields the Hub's sha256 for the
    check and fails fast when the Hub is unreachable, in which case a complete cached copy is
    used, instead of waiting through huggingface_hub's retry back-off before failing anyway.
    """
    endpoint = _endpoint(endpoint)
    expected = KNOWN_SHA256 if expected_sha256 is None else expected_sha256
    if constants.is_offline_mode():
        return _cached_or_raise(cache_dir, expected, "offline mode is on (HF_HUB_OFFLINE=1) and the files are "
                                                    "not in the Hugging Face cache")
    try:
        hub_sha = {name: _remote_sha256(name, endpoint) for name in (IMAGE_WEIGHTS, HEAD_WEIGHTS)}
    except _network_errors() as err:
        return _cached_or_raise(cache_dir, expected, _describe(err), err)

    bars = None if progress else _QuietTqdm
    try:
        image = hf_hub_download(OFFICIAL_REPO, IMAGE_WEIGHTS, cache_dir=cache_dir, endpoint=endpoint, tqdm_class=bars)
        head = hf_hub_download(OFFICIAL_REPO, HEAD_WEIGHTS, cache_dir=cache_dir, endpoint=endpoint, tqdm_class=bars)
        encoder = snapshot_download(ENCODER_REPO, cache_dir=cache_dir, endpoint=endpoint, tqdm_class=bars,
                                    ignore_patterns=ENCODER_IGNORE_PATTERNS)
    except _network_errors() as err:
        raise ModelDownloadError(_describe(err)) from err
    files = OfficialFiles(Path(image), Path(head), Path(encoder))
    _check(files, expected, hub_sha)
    return files


def verify_official(
    files: OfficialFiles,
    expected_sha256: Mapping[str, str] | None = None,
    *,
    endpoint: str | None = None,
) -> dict[str, str]:
    """sha256 of both checkpoints, checked against pinned hashes and the Hub's LFS sha256.

    The Hub hash comes from a metadata request; offline, a cached file is checked against the
    blob it points to, whose name is the sha256 the Hub advertised when it was downloaded.
    Files in the HF cache that fail are evicted; files in a user's folder are never deleted.
    """
    endpoint = _endpoint(endpoint)
    expected = KNOWN_SHA256 if expected_sha256 is None else expected_sha256
    hub_sha: dict[str, str | None] = {}
    for name, path in _checkpoints(files):
        sha = None
        if not constants.is_offline_mode():
            try:
                sha = _remote_sha256(name, endpoint)
            except _network_errors():
                sha = None
        hub_sha[name] = sha or _blob_sha256(path)
    return _check(files, expected, hub_sha)


# -- internals ---------------------------------------------------------------------------------


class _QuietTqdm(hf_tqdm):
    """huggingface_hub's tqdm, always disabled: per-call silence without touching the global switch.

    ``huggingface_hub.utils.disable_progress_bars()`` is process-wide (it would also silence a
    download running in another thread); ``tqdm_class`` on hf_hub_download / snapshot_download
    scopes it to this call. Subclassing the hub's tqdm keeps the ``name=`` keyword it passes valid.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _endpoint(endpoint: str | None) -> str | None:
    """Explicit endpoint, else HF_ENDPOINT read now (huggingface_hub reads it only at import)."""
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    return endpoint.rstrip("/") if endpoint else None


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'the Hub could not give us the file'.

    huggingface_hub's own errors are OSErrors (HfHubHTTPError, OfflineModeIsEnabled,
    LocalEntryNotFoundError); raw transport errors come from its HTTP client (httpx2 in 2.x).
    """
    errors: list[type[BaseException]] = [OSError, EntryNotFoundError]
    for client in ("httpx2", "httpx"):
        module = sys.modules.get(client)
        if module is not None and isinstance(getattr(module, "HTTPError", None), type):
            errors.append(module.HTTPError)
    return tuple(errors)


def _one_line(text: str, limit: int = 500) -> str:
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _describe(err: BaseException) -> str:
    """One line naming the underlying failure (type and first line of its message)."""
    message = _one_line(str(err))
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def _remote_sha256(filename: str, endpoint: str | None) -> str | None:
    """The Hub's sha256 of a checkpoint (HEAD request, no retries), or None if it is not an LFS file.

    For LFS files the Hub's ETag (X-Linked-Etag) is the object's sha256; for plain git files it is
    the git blob sha1, which is not what we hash, so those are not compared.
    """
    url = hf_hub_url(OFFICIAL_REPO, filename, endpoint=endpoint)
    etag = get_hf_file_metadata(url, endpoint=endpoint).etag
    return etag.lower() if etag and _SHA256_RE.match(etag) else None


def _blob_sha256(path: Path) -> str | None:
    """sha256 the Hub advertised for a cached file: the name of the blob its snapshot link points to."""
    if not path.is_symlink():
        return None
    blob = path.resolve()
    return blob.name.lower() if blob.parent.name == "blobs" and _SHA256_RE.match(blob.name) else None


def _in_hf_cache(path: Path) -> bool:
    """True for ``<cache>/models--x--y/snapshots/<commit>/...`` paths (ours to delete, unlike a user's folder)."""
    parts = path.absolute().parts
    return any(part == "snapshots" and i > 0 and parts[i - 1].startswith("models--") for i, part in enumerate(parts))


def _evict(path: Path) -> bool:
    """Drop a bad cached file and its blob, so the next download fetches it again."""
    if not _in_hf_cache(path):
        return False
    blob = path.resolve() if path.is_symlink() else None
    path.unlink(missing_ok=True)
    if blob is not None and blob.parent.name == "blobs":
        blob.unlink(missing_ok=True)
    return True


def _checkpoints(files: OfficialFiles) -> tuple[tuple[str, Path], tuple[str, Path]]:
    return ((IMAGE_WEIGHTS, files.image_weights), (HEAD_WEIGHTS, files.head_weights))


def _check(files: OfficialFiles, expected: Mapping[str, str], hub_sha: Mapping[str, str | None]) -> dict[str, str]:
    """Hash both checkpoints; raise ChecksumError (after evicting the cached copy) on any mismatch."""
    digests: dict[str, str] = {}
    for name, path in _checkpoints(files):
        actual = sha256_file(path)
        for against, want in (("the pinned sha256", expected.get(name)),
                              (f"the Hub's LFS sha256 ({OFFICIAL_REPO})", hub_sha.get(name))):
            if want and want.lower() != actual:
                raise ChecksumError(name, want.lower(), actual, against=against, removed=_evict(path))
        digests[name] = actual
    return digests


def _cached_or_raise(
    cache_dir: str | os.PathLike[str] | None,
    expected: Mapping[str, str],
    cause: str,
    err: BaseException | None = None,
) -> OfficialFiles:
    """Fallback when the Hub cannot be reached: a complete cached copy (verified offline) or a clear error."""
    files = official_from_cache(cache_dir)
    if files is None:
        raise ModelDownloadError(cause) from err
    _check(files, expected, {name: _blob_sha256(path) for name, path in _checkpoints(files)})
    return files
