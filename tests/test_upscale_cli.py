"""The resizing up-sampling step through the CLI and batch, on the bundled model (sizes, metadata, replay)."""

import numpy as np
import pytest
from PIL import Image, ImageCms

from engine.cli import main
from engine.edit.recipes import Recipe
from engine.edit.session import EditSession
from engine.io.images import load_image

H, W = 40, 56


@pytest.fixture
def small(tmp_path, photo):
    path = tmp_path / "small.png"
    Image.fromarray((photo[:H, :W] * 255).astype(np.uint8)).save(path)
    return path


def run(*args) -> int:
    return main([*map(str, args), "--model", "studio-small", "--device", "cpu"])


@pytest.mark.parametrize("instruction, factor", [("upscale it 2x", 2), ("make it 4x bigger", 4), ("upscale", 2)])
def test_upsampling_instructions_change_the_pixel_size(small, tmp_path, instruction, factor):
    out = tmp_path / f"out_{factor}_{len(instruction)}.png"
    assert run("restore", small, instruction, "-o", out) == 0
    assert Image.open(out).size == (W * factor, H * factor)


def test_other_instructions_keep_the_size(small, tmp_path):
    out = tmp_path / "same.png"
    assert run("restore", small, "remove the noise", "-o", out) == 0
    assert Image.open(out).size == (W, H)


def test_icc_exif_and_sixteen_bits_survive_the_resize(tmp_path, photo):
    src = tmp_path / "tagged.jpg"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    Image.fromarray((photo[:H, :W] * 255).astype(np.uint8)).save(src, icc_profile=icc, exif=exif, quality=95)
    out = tmp_path / "tagged_2x.jpg"
    assert run("restore", src, "upscale it 2x", "-o", out) == 0
    pic = load_image(out)
    assert pic.size == (W * 2, H * 2)
    assert pic.icc_profile == icc and pic.exif is not None and b"TestCam" in pic.exif

    deep = tmp_path / "deep.png"
    Image.fromarray((photo[:H, :W, 0] * 65535).astype(np.uint16)).save(deep)
    assert run("restore", deep, "upscale it 2x", "-o", tmp_path / "deep_2x.png") == 0
    pic = load_image(tmp_path / "deep_2x.png")
    assert pic.size == (W * 2, H * 2) and pic.bit_depth == 16


def test_limit_is_refused_with_the_size_it_would_make(small, tmp_path, capsys):
    assert run("restore", small, "upscale it 4x", "-o", tmp_path / "big.png", "--max-result-mp", "0.01") == 1
    err = capsys.readouterr().err
    assert "224 x 160 px" in err and not (tmp_path / "big.png").exists()


def test_batch_and_recipes_replay_the_size(small, tmp_path, photo):
    other = tmp_path / "in" / "other.png"
    other.parent.mkdir()
    Image.fromarray((photo[:30, :20] * 255).astype(np.uint8)).save(other)
    assert run("batch", small, other, "--instruction", "upscale it 2x", "-o", tmp_path / "out") == 0
    assert Image.open(tmp_path / "out" / "small.png").size == (2 * W, 2 * H)
    assert Image.open(tmp_path / "out" / "other.png").size == (40, 60)  # each photo at its own size

    from engine.model.pipeline import Restorer

    restorer = Restorer.from_pretrained("studio-small", device="cpu")
    session = EditSession(load_image(small).rgb)
    session.apply("remove the noise, then make it 3 times bigger", restorer)
    recipe = session.to_recipe().save(tmp_path / "r.json")
    assert run("batch", other, "--recipe", recipe, "-o", tmp_path / "out3") == 0
    assert Image.open(tmp_path / "out3" / "other.png").size == (60, 90)
    assert Recipe.load(recipe).steps[-1].params == {"factor": 3.0}
