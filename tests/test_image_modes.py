"""``instructir restore`` and ``instructir batch`` keep the mode and depth of their inputs (issue 18, item 8).

A 16-bit grayscale PNG comes back 16-bit grayscale, 16-bit RGB stays 16-bit RGB, gray + alpha stays
gray + alpha (16 and 8 bit), with the alpha untouched, even though the network works in RGB and its
result of a gray photo carries a faint colour cast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.io.images import load_image, picture_from_array, save_image


def _ramp(h: int = 40, w: int = 56) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 977 + y * 1553) % 65536).astype(np.uint16)


def _sources(folder: Path) -> dict[str, Path]:
    g16 = _ramp()
    out = {}
    out["gray16"] = folder / "gray16.png"
    Image.fromarray(g16).save(out["gray16"])  # Pillow: mode I;16
    out["rgb16"] = save_image(picture_from_array(np.dstack([g16, g16[::-1], g16[:, ::-1]])), folder / "rgb16.png")
    alpha16 = (np.arange(g16.size).reshape(g16.shape) * 37 % 65536).astype(np.uint16)
    out["graya16"] = save_image(picture_from_array(np.dstack([g16, alpha16])), folder / "graya16.png")
    out["graya8"] = folder / "graya8.png"
    Image.fromarray(np.dstack([g16 >> 8, alpha16 >> 8]).astype(np.uint8), "LA").save(out["graya8"])
    out["gray16tif"] = save_image(picture_from_array(g16), folder / "gray16.tif")
    return out


EXPECTED = {  # name: (grayscale, bit depth, alpha)
    "gray16": (True, 16, False), "rgb16": (False, 16, False), "graya16": (True, 16, True),
    "graya8": (True, 8, True), "gray16tif": (True, 16, False),
}


def _check(source: Path, result: Path, name: str) -> None:
    gray, depth, alpha = EXPECTED[name]
    src, out = load_image(source), load_image(result)
    assert (src.grayscale, src.bit_depth, src.alpha is not None) == (gray, depth, alpha)  # as written
    assert (out.grayscale, out.bit_depth, out.alpha is not None) == (gray, depth, alpha), name
    assert out.size == src.size
    if alpha:
        np.testing.assert_array_equal(out.alpha, src.alpha)  # alpha untouched, at full depth
    if depth == 16:  # not 8-bit data in a 16-bit file: more than 256 distinct levels survive
        assert len(np.unique(out.rgb[..., 0])) > 256
    if gray:
        np.testing.assert_array_equal(out.rgb[..., 0], out.rgb[..., 2])
    with Image.open(result) as im:
        assert im.mode in {"I;16", "L", "LA", "RGB", "RGBA"}
        if name == "gray16":
            assert im.mode == "I;16"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_restore_keeps_mode_and_depth(tmp_path, tiny_model_dir, name):
    sources = _sources(tmp_path)
    out = tmp_path / f"out-{sources[name].name}"
    assert main(["restore", str(sources[name]), "remove the noise", "--model", str(tiny_model_dir),
                 "--device", "cpu", "-o", str(out)]) == 0
    _check(sources[name], out, name)


def test_batch_keeps_mode_and_depth(tmp_path, tiny_model_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    sources = _sources(folder)
    assert main(["batch", str(folder), "--instruction", "remove the noise", "--model", str(tiny_model_dir),
                 "--device", "cpu", "-o", str(tmp_path / "out")]) == 0
    for name, path in sources.items():
        found = list((tmp_path / "out").rglob(path.stem + "*" + path.suffix))
        assert len(found) == 1, (name, sorted(p.name for p in (tmp_path / "out").rglob("*")))
        _check(path, found[0], name)
