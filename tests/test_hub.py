"""engine.model.hub against a local fake Hugging Face Hub (no machine here can reach the real one).

The fake hub implements what huggingface_hub 2.4.0 requests for hf_hub_download,
snapshot_download and get_hf_file_metadata:

* ``HEAD/GET /{repo}/resolve/{revision}/{path}``: X-Repo-Commit, ETag (git blob sha1) and, for
  LFS files, X-Linked-Etag (sha256) + X-Linked-Size; X-Error-Code on 404s.
* ``GET /api/models/{repo}[/revision/{revision}]``: repo info (``id``, ``sha``, ``siblings``).
* ``GET /api/models/{repo}/tree/{revision}``: recursive listing (``type``, ``path``, ``size``, ``oid``, ``lfs``).

huggingface_hub's own ENDPOINT constant points at a closed port, so the download only works if
``endpoint=`` is passed through everywhere; any socket to a non-loopback host fails the test.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.utils import _detect_agent

# No conftest/packaging yet: make `engine` importable for a plain `pytest tests/...` (as test_imageio.py does).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from engine.model import hub  # noqa: E402

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _state_dict_bytes(seed: int) -> bytes:
    """A tiny real checkpoint, so the fake .pt files load like the real ones."""
    gen = torch.Generator().manual_seed(seed)
    buf = io.BytesIO()
    torch.save({"weight": torch.randn(4, 3, generator=gen), "bias": torch.zeros(4)}, buf)
    return buf.getvalue()


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    commit: str
    files: dict[str, bytes]
    lfs: set[str]
    served: dict[str, bytes] = field(default_factory=dict)  # content actually sent, when it differs (corruption)

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.files[path]).hexdigest()


class FakeHub:
    """In-memory repos behind a ThreadingHTTPServer on 127.0.0.1; records every request."""

    def __init__(self, repos: dict[str, FakeRepo]) -> None:
        self.repos = repos
        self.requests: list[tuple[str, str]] = []
        self.unexpected: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self._thread.join(5)

    def corrupt(self, repo_id: str, path: str) -> None:
        """Serve different bytes of the same size, under the advertised (original) sha256."""
        data = bytearray(self.repos[repo_id].files[path])
        data[-1] ^= 0xFF
        self.repos[repo_id].served[path] = bytes(data)

    def paths(self, method: str) -> list[str]:
        return [path for m, path in self.requests if m == method]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
                self._serve(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._serve(body=True)

            def _send(self, status: int, headers: dict[str, str], payload: bytes, body: bool) -> None:
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def _json(self, data: object, body: bool) -> None:
                self._send(200, {"Content-Type": "application/json"}, json.dumps(data).encode(), body)

            def _error(self, status: int, code: str, body: bool, extra: dict[str, str] | None = None) -> None:
                headers = {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json"}
                self._send(status, {**headers, **(extra or {})}, json.dumps({"error": code}).encode(), body)

            def _serve(self, body: bool) -> None:
                url = urlsplit(self.path)
                path = unquote(url.path)
                fake.requests.append((self.command, path))
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    self._api(parts[2] + "/" + parts[3], parts[4:], body)
                elif len(parts) >= 5 and parts[2] == "resolve":
                    self._resolve(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]), body)
                else:
                    fake.unexpected.append((self.command, path))
                    self._error(404, "NotFound", body)

            def _repo(self, repo_id: str, revision: str, body: bool) -> FakeRepo | None:
                repo = fake.repos.get(repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound", body)
                elif revision not in ("main", repo.commit):
                    self._error(404, "RevisionNotFound", body)
                    return None
                return repo

            def _api(self, repo_id: str, rest: list[str], body: bool) -> None:
                revision = rest[1] if len(rest) >= 2 else "main"
                repo = self._repo(repo_id, revision, body)
                if repo is None:
                    return
                if not rest or rest[0] == "revision":
                    siblings = [{"rfilename": p} for p in sorted(repo.files)]
                    self._json({"id": repo_id, "sha": repo.commit, "private": False, "siblings": siblings}, body)
                elif rest[0] == "tree":
                    self._json(self._tree(repo), body)
                else:
                    fake.unexpected.append((self.command, self.path))
                    self._error(404, "NotFound", body)

            def _tree(self, repo: FakeRepo) -> list[dict[str, object]]:
                folders = sorted({"/".join(p.split("/")[:i]) for p in repo.files for i in range(1, p.count("/") + 1)})
                entries: list[dict[str, object]] = [
                    {"type": "directory", "path": d, "oid": _git_sha1(d.encode()), "size": 0} for d in folders
                ]
                for p, data in sorted(repo.files.items()):
                    entry: dict[str, object] = {"type": "file", "path": p, "size": len(data), "oid": _git_sha1(data)}
                    if p in repo.lfs:
                        entry["lfs"] = {"oid": repo.sha256(p), "size": len(data), "pointerSize": 134}
                    entries.append(entry)
                return entries

            def _resolve(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
                repo = self._repo(repo_id, revision, body)
                if repo is None:
                    return
                if filename not in repo.files:
                    self._error(404, "EntryNotFound", body, {"X-Repo-Commit": repo.commit})
                    return
                data = repo.files[filename]
                headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{_git_sha1(data)}"',
                           "Content-Type": "application/octet-stream"}
                if filename in repo.lfs:
                    headers.update({"ETag": f'"{repo.sha256(filename)}"',
                                    "X-Linked-Etag": f'"{repo.sha256(filename)}"',
                                    "X-Linked-Size": str(len(data))})
                self._send(200, headers, repo.served.get(filename, data), body)

        return Handler


def _official_repos() -> dict[str, FakeRepo]:
    encoder_files = {
        "config.json": b'{"model_type": "bert", "hidden_size": 8}',
        "modules.json": b'[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]',
        "1_Pooling/config.json": b'{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true}',
        "tokenizer.json": b'{"version": "1.0"}',
        "vocab.txt": b"[PAD]\n[UNK]\nhello\n",
        "model.safetensors": b"fake safetensors weights",
        "onnx/model.onnx": b"onnx weights we must not download",
        "tf_model.h5": b"keras weights we must not download",
    }
    return {
        hub.OFFICIAL_REPO: FakeRepo(
            commit="a" * 40,
            files={hub.IMAGE_WEIGHTS: _state_dict_bytes(0), hub.HEAD_WEIGHTS: _state_dict_bytes(1),
                   "README.md": b"# InstructIR"},
            lfs={hub.IMAGE_WEIGHTS, hub.HEAD_WEIGHTS},
        ),
        hub.ENCODER_REPO: FakeRepo(
            commit="b" * 40, files=encoder_files, lfs={"model.safetensors", "onnx/model.onnx", "tf_model.h5"}
        ),
    }


def _closed_port_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(autouse=True)
def _isolated_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No real network: loopback-only sockets, huggingface_hub's default endpoint is a dead port.

    Blocked attempts are recorded and fail the test, since huggingface_hub would swallow the OSError.
    """
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
    blocked: list[object] = []

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host not in _LOOPBACK and host not in (None, b"127.0.0.1"):
            blocked.append(host)
            raise OSError(f"test tried to resolve non-local host {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def guarded_connect(self: socket.socket, address: object) -> None:
        if isinstance(address, tuple) and address[0] not in _LOOPBACK:
            blocked.append(address)
            raise OSError(f"test tried to connect to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    dead = _closed_port_endpoint()
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)  # no agent-registry fetch
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(hub, "KNOWN_SHA256", {})
    yield
    assert not blocked, f"test tried to reach the network: {blocked}"


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    server = FakeHub(_official_repos())
    yield server
    server.stop()
    assert not server.unexpected, f"fake hub got requests it does not implement: {server.unexpected}"


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


def test_download_into_cache_then_offline_from_cache(fake_hub: FakeHub, cache: Path) -> None:
    files = hub.download_official(cache, progress=False, endpoint=fake_hub.endpoint)

    repos = fake_hub.repos
    assert files.image_weights.read_bytes() == repos[hub.OFFICIAL_REPO].files[hub.IMAGE_WEIGHTS]
    assert files.head_weights.read_bytes() == repos[hub.OFFICIAL_REPO].files[hub.HEAD_WEIGHTS]
    assert torch.load(files.image_weights, weights_only=True)["weight"].shape == (4, 3)
    assert cache in files.image_weights.parents and cache in files.encoder_dir.parents
    for name in ("config.json", "modules.json", "1_Pooling/config.json", "tokenizer.json", "model.safetensors"):
        assert (files.encoder_dir / name).is_file(), name
    assert not (files.encoder_dir / "onnx").exists() and not (files.encoder_dir / "tf_model.h5").exists()
    # The fake hub really served it, through the endpoint we passed (the library default is a dead port).
    assert f"/{hub.OFFICIAL_REPO}/resolve/main/{hub.IMAGE_WEIGHTS}" in fake_hub.paths("HEAD")
    assert f"/{hub.OFFICIAL_REPO}/resolve/main/{hub.HEAD_WEIGHTS}" in fake_hub.paths("GET")
    assert f"/api/models/{hub.ENCODER_REPO}/revision/main" in fake_hub.paths("GET")
    assert f"/api/models/{hub.ENCODER_REPO}/tree/{'b' * 40}" in fake_hub.paths("GET")
    assert not any("onnx" in p or p.endswith(".h5") for p in fake_hub.paths("GET"))

    fake_hub.stop()
    assert hub.official_from_cache(cache) == files
    assert hub.download_official(cache, progress=False, endpoint=fake_hub.endpoint) == files  # Hub down: cache
    digests = hub.verify_official(files, endpoint=fake_hub.endpoint)  # offline: checked against blob names
    assert digests == {name: repos[hub.OFFICIAL_REPO].sha256(name) for name in (hub.IMAGE_WEIGHTS, hub.HEAD_WEIGHTS)}


def test_hf_hub_offline_uses_cache_or_explains(fake_hub: FakeHub, cache: Path, monkeypatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub.ModelDownloadError, match="HF_HUB_OFFLINE"):
        hub.download_official(cache, progress=False, endpoint=fake_hub.endpoint)
    assert fake_hub.requests == []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    files = hub.download_official(cache, progress=False, endpoint=fake_hub.endpoint)
    seen = len(fake_hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.download_official(cache, progress=False, endpoint=fake_hub.endpoint) == files
    assert len(fake_hub.requests) == seen


def test_official_from_cache_is_none_when_nothing_cached(cache: Path) -> None:
    assert hub.official_from_cache(cache) is None


def test_corrupt_download_raises_and_is_evicted(fake_hub: FakeHub, cache: Path) -> None:
    fake_hub.corrupt(hub.OFFICIAL_REPO, hub.IMAGE_WEIGHTS)
    good = fake_hub.repos[hub.OFFICIAL_REPO].sha256(hub.IMAGE_WEIGHTS)

    with pytest.raises(hub.ChecksumError) as info:
        hub.download_official(cache, progress=False, endpoint=fake_hub.endpoint)

    err = info.value
    assert err.filename == hub.IMAGE_WEIGHTS and err.expected == good and err.actual != good
    assert hub.IMAGE_WEIGHTS in str(err) and good in str(err) and err.actual in str(err)
    assert not list(cache.rglob(hub.IMAGE_WEIGHTS)), "bad snapshot file left in the cache"
    assert not list(cache.rglob(good)), "bad blob left in the cache"
    assert hub.official_from_cache(cache) is None

    fake_hub.repos[hub.OFFICIAL_REPO].served.clear()  # the Hub is fixed: a retry downloads again and passes
    files = hub.download_official(cache, progress=False, endpoint=fake_hub.endpoint)
    assert hub.sha256_file(files.image_weights) == good


def test_expected_sha256_mismatch(fake_hub: FakeHub, cache: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(hub.ChecksumError, match=wrong) as info:
        hub.download_official(cache, progress=False, endpoint=fake_hub.endpoint,
                              expected_sha256={hub.HEAD_WEIGHTS: wrong})
    assert info.value.filename == hub.HEAD_WEIGHTS
    assert not list(cache.rglob(hub.HEAD_WEIGHTS))

    right = {n: fake_hub.repos[hub.OFFICIAL_REPO].sha256(n) for n in (hub.IMAGE_WEIGHTS, hub.HEAD_WEIGHTS)}
    files = hub.download_official(cache, progress=False, endpoint=fake_hub.endpoint, expected_sha256=right)
    assert hub.verify_official(files, right, endpoint=fake_hub.endpoint) == right


def test_known_sha256_is_the_default(fake_hub: FakeHub, cache: Path, monkeypatch) -> None:
    monkeypatch.setattr(hub, "KNOWN_SHA256", {hub.IMAGE_WEIGHTS: "f" * 64})
    with pytest.raises(hub.ChecksumError, match="pinned"):
        hub.download_official(cache, progress=False, endpoint=fake_hub.endpoint)


def test_server_down_nothing_cached_explains(cache: Path) -> None:
    with pytest.raises(hub.ModelDownloadError) as info:
        hub.download_official(cache, progress=False, endpoint=_closed_port_endpoint())
    message = str(info.value)
    for needed in (hub.IMAGE_WEIGHTS, hub.HEAD_WEIGHTS, hub.ENCODER_DIRNAME, hub.OFFICIAL_REPO, hub.ENCODER_REPO):
        assert needed in message
    assert "ConnectError" in info.value.cause and "\n" not in info.value.cause
    assert not isinstance(info.value, hub.ChecksumError)


def test_http_error_is_a_model_download_error(fake_hub: FakeHub, cache: Path) -> None:
    del fake_hub.repos[hub.ENCODER_REPO]  # the weights are there, the encoder repo answers 404
    with pytest.raises(hub.ModelDownloadError, match="RepositoryNotFoundError"):
        hub.download_official(cache, progress=False, endpoint=fake_hub.endpoint)


def test_endpoint_from_hf_endpoint_env(fake_hub: FakeHub, cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint + "/")
    assert hub.download_official(cache, progress=False).image_weights.is_file()


def test_progress_bars_follow_the_flag(fake_hub: FakeHub, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub's switch to show bars even without a TTY
    hub.download_official(tmp_path / "quiet", progress=False, endpoint=fake_hub.endpoint)
    assert capsys.readouterr().err == ""
    hub.download_official(tmp_path / "loud", progress=True, endpoint=fake_hub.endpoint)
    assert hub.IMAGE_WEIGHTS in capsys.readouterr().err


def test_official_from_folder(tmp_path: Path) -> None:
    (tmp_path / hub.IMAGE_WEIGHTS).write_bytes(_state_dict_bytes(0))
    (tmp_path / hub.ENCODER_DIRNAME).mkdir()
    with pytest.raises(hub.ModelDownloadError) as info:
        hub.official_from_folder(tmp_path)
    assert f"missing: {hub.HEAD_WEIGHTS}, {hub.ENCODER_DIRNAME}/" in str(info.value)
    assert f"is missing: {hub.IMAGE_WEIGHTS}" not in str(info.value)

    (tmp_path / hub.HEAD_WEIGHTS).write_bytes(_state_dict_bytes(1))
    (tmp_path / hub.ENCODER_DIRNAME / "config.json").write_text("{}")
    files = hub.official_from_folder(tmp_path)
    assert files == hub.OfficialFiles(tmp_path / hub.IMAGE_WEIGHTS, tmp_path / hub.HEAD_WEIGHTS,
                                      tmp_path / hub.ENCODER_DIRNAME)


def test_verify_never_deletes_a_users_folder(fake_hub: FakeHub, tmp_path: Path) -> None:
    (tmp_path / hub.IMAGE_WEIGHTS).write_bytes(b"not the official weights")
    (tmp_path / hub.HEAD_WEIGHTS).write_bytes(fake_hub.repos[hub.OFFICIAL_REPO].files[hub.HEAD_WEIGHTS])
    (tmp_path / hub.ENCODER_DIRNAME).mkdir()
    (tmp_path / hub.ENCODER_DIRNAME / "config.json").write_text("{}")
    files = hub.official_from_folder(tmp_path)
    with pytest.raises(hub.ChecksumError, match="Hub's LFS sha256"):
        hub.verify_official(files, endpoint=fake_hub.endpoint)  # compared with the Hub's metadata
    assert files.image_weights.is_file()
    assert ("HEAD", f"/{hub.OFFICIAL_REPO}/resolve/main/{hub.IMAGE_WEIGHTS}") in fake_hub.requests


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc" * 1000)
    assert hub.sha256_file(path, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()
