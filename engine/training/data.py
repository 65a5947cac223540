"""Training data: clean photos in memory, random patches, synthetic degradations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.io.images import IMAGE_SUFFIXES
from engine.training.degradations import TASKS, check_degradation_weights, degrade


def _fit(im: Image.Image, max_side: int) -> np.ndarray:
    im = im.convert("RGB")
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def package_photos(max_side: int) -> list[np.ndarray]:
    """Clean colour photos that ship inside scikit-image and scikit-learn."""
    photos = []
    try:
        from skimage import data

        for name in ("astronaut", "chelsea", "coffee", "rocket"):
            photos.append(_fit(Image.fromarray(getattr(data, name)()), max_side))
    except Exception:  # noqa: BLE001 - optional extra data
        pass
    try:
        from sklearn.datasets import load_sample_images

        photos += [_fit(Image.fromarray(a), max_side) for a in load_sample_images().images]
    except Exception:  # noqa: BLE001
        pass
    return photos


def load_photos(roots: list[str | Path], extra_package_photos: bool, max_side: int,
                photo_cache: bool | str | Path = False) -> list[np.ndarray]:
    """Every photo under ``roots`` (recursively) plus, optionally, the packaged ones and the photos that
    ``python -m engine.training.photos fetch`` brought into the cache (``True``: the default cache folder)."""
    photos = []
    roots = list(roots)
    if photo_cache:
        from engine.training.photos import cache_dir

        folder = cache_dir() if photo_cache is True else Path(photo_cache)
        if folder.is_dir():
            roots.append(folder)
    for root in roots:
        if "datasets/eval" in Path(root).resolve().as_posix():
            raise ValueError(f"refusing to train on the evaluation set: {root}")
        for path in sorted(Path(root).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(path) as im:
                    photos.append(_fit(im, max_side))
    if extra_package_photos:
        photos += package_photos(max_side)
    if not photos:
        raise FileNotFoundError(f"no training photos found under {roots}")
    return photos


@dataclass
class Batch:
    degraded: torch.Tensor  # B x 3 x P x P
    clean: torch.Tensor  # B x 3 x P x P (target)
    tasks: list[str]


class PatchSampler:
    """Draws (degraded, clean) patch pairs, choosing each patch's task by ``task_weights``.

    Patches are cut with a margin so blur kernels and resampling see real
    context, then cropped back; random flips and 90-degree turns augment.
    With ``identity_fraction`` the target is the input itself and the task is
    "unrelated": an instruction that is not a restoration request must leave
    the photo unchanged even if the intent head lets it through. Tasks missing
    from ``task_weights`` weigh 1 (uniform when it is empty): noise and blur
    are the hardest for a small network, so the config can give them more.
    """

    def __init__(self, photos: list[np.ndarray], patch_size: int, seed: int,
                 identity_fraction: float = 0.05, margin: int = 16,
                 task_weights: dict[str, float] | None = None,
                 degradation_weights: dict[str, dict[str, float]] | None = None) -> None:
        self.photos = [p for p in photos if min(p.shape[:2]) >= patch_size + 2 * margin]
        self.patch = patch_size
        self.margin = margin
        self.identity_fraction = identity_fraction
        self.rng = np.random.default_rng(seed)
        weights = task_weights or {}
        unknown = set(weights) - set(TASKS)
        if unknown:
            raise ValueError(f"task_weights names unknown tasks {sorted(unknown)}; known: {', '.join(TASKS)}")
        w = np.array([float(weights.get(t, 1.0)) for t in TASKS])
        self.task_p = w / w.sum()
        self.degradation_weights = degradation_weights or {}
        check_degradation_weights(self.degradation_weights)

    @classmethod
    def for_tasks(cls, photos: list[np.ndarray], tasks: list[str], patch_size: int, seed: int, **kw) -> PatchSampler:
        """A sampler that draws only ``tasks`` (e.g. the global ones, at larger patches), keeping their weights."""
        weights = kw.pop("task_weights", None) or {}
        only = {t: (float(weights.get(t, 1.0)) if t in tasks else 0.0) for t in TASKS}
        return cls(photos, patch_size, seed, task_weights=only, **kw)

    def _crop(self) -> np.ndarray:
        img = self.photos[int(self.rng.integers(len(self.photos)))]
        size = self.patch + 2 * self.margin
        y = int(self.rng.integers(img.shape[0] - size + 1))
        x = int(self.rng.integers(img.shape[1] - size + 1))
        crop = img[y : y + size, x : x + size]
        if self.rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.rot90(crop, int(self.rng.integers(4)))
        return np.ascontiguousarray(crop, dtype=np.float32) / 255.0

    def sample(self) -> tuple[np.ndarray, np.ndarray, str]:
        clean = self._crop()
        m, p = self.margin, self.patch
        if self.rng.random() < self.identity_fraction:
            task = "unrelated"
            source = clean
            if self.rng.random() < 0.5:  # an already damaged photo, damaged as the config's mixture says
                other = TASKS[int(self.rng.integers(len(TASKS)))]
                source = degrade(clean, other, self.rng, self.degradation_weights.get(other)).image
            return source[m : m + p, m : m + p], source[m : m + p, m : m + p], task
        task = TASKS[int(self.rng.choice(len(TASKS), p=self.task_p))]
        deg = degrade(clean, task, self.rng, self.degradation_weights.get(task)).image
        return deg[m : m + p, m : m + p], clean[m : m + p, m : m + p], task

    def batch(self, size: int) -> Batch:
        items = [self.sample() for _ in range(size)]
        to_t = lambda arrs: torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return Batch(to_t([i[0] for i in items]), to_t([i[1] for i in items]), [i[2] for i in items])


class BatchStream:
    """The batches of a run: from ``sampler``, and every ``global_every``-th from ``global_sampler`` (larger
    patches of the global tasks). ``dataset()`` serves the same from DataLoader workers (an accelerator
    consumes batches faster than one Python thread degrades them)."""

    def __init__(self, sampler: PatchSampler, batch_size: int, global_sampler: PatchSampler | None = None,
                 global_every: int = 0, global_batch_size: int | None = None) -> None:
        self.sampler, self.batch_size = sampler, batch_size
        self.global_sampler, self.global_every = global_sampler, global_every
        self.global_batch_size = global_batch_size or batch_size

    def batch_for(self, step: int) -> Batch:
        if self.global_sampler is not None and self.global_every and step % self.global_every == self.global_every - 1:
            return self.global_sampler.batch(self.global_batch_size)
        return self.sampler.batch(self.batch_size)

    def dataset(self, seed: int) -> torch.utils.data.IterableDataset:
        stream = self

        class _Batches(torch.utils.data.IterableDataset):
            def __iter__(self):
                info = torch.utils.data.get_worker_info()
                wid = info.id if info is not None else 0
                stream.sampler.rng = np.random.default_rng([seed, wid, 0])
                if stream.global_sampler is not None:
                    stream.global_sampler.rng = np.random.default_rng([seed, wid, 1])
                step = wid
                while True:
                    yield stream.batch_for(step)
                    step += 1

        return _Batches()
