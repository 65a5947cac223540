"""Tests for engine.io.images: round trips, metadata, damaged input and safe writing.

All images are generated here (a few pixels each) so the file runs in well
under a second on a busy machine.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin

# The repo has no packaging/pytest config yet: make `engine` importable when
# pytest is run as a plain `pytest tests/...` from anywhere.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from engine.errors import StudioError  # noqa: E402
from engine.io import atomic  # noqa: E402
from engine.io.images import (  # noqa: E402
    DEFAULT_MAX_PIXELS,
    SUPPORTED_WRITE_FORMATS,
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    OutputExistsError,
    Picture,
    UnsupportedImageError,
    load_image,
    output_path_for,
    picture_from_array,
    save_image,
    to_uint,
)

RNG = np.random.default_rng(1234)


def rand8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, shape, dtype=np.uint16).astype(np.uint8)


def rand16(*shape: int) -> np.ndarray:
    return RNG.integers(0, 65536, shape, dtype=np.uint32).astype(np.uint16)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_bytes(orientation: int | None = None, make: str = "TestCam") -> bytes:
    exif = Image.Exif()
    exif[0x010F] = make  # Make
    if orientation is not None:
        exif[0x0112] = orientation
    return exif.tobytes()


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".part")]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_rgb8_round_trip_is_exact(tmp_path: Path, suffix: str) -> None:
    pixels = rand8(7, 9, 3)
    src = tmp_path / f"src{suffix}"
    Image.fromarray(pixels).save(src)
    pic = load_image(src)
    assert pic.rgb.dtype == np.float32 and pic.rgb.shape == (7, 9, 3)
    assert pic.bit_depth == 8 and not pic.grayscale and pic.alpha is None
    assert pic.size == (9, 7)
    assert np.array_equal(to_uint(pic, 8), pixels)
    out = save_image(pic, tmp_path / f"out{suffix}")
    assert np.array_equal(np.asarray(Image.open(out)), pixels)


def test_webp_quality_100_is_lossless(tmp_path: Path) -> None:
    pixels = rand8(6, 5, 3)
    out = save_image(picture_from_array(pixels), tmp_path / "x.webp", quality=100)
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), pixels)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_gray16_round_trip(tmp_path: Path, suffix: str) -> None:
    values = rand16(5, 8)
    src = tmp_path / f"g16{suffix}"
    Image.fromarray(values).save(src)  # mode I;16
    pic = load_image(src)
    assert pic.bit_depth == 16 and pic.grayscale
    assert np.array_equal(pic.rgb[..., 0], pic.rgb[..., 2])
    assert np.abs(to_uint(pic.rgb[..., 0], 16).astype(int) - values).max() <= 1
    out = save_image(pic, tmp_path / f"out{suffix}")
    with Image.open(out) as im:
        assert im.mode == "I;16"
        assert np.abs(np.asarray(im).astype(int) - values).max() <= 1


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_colour16_round_trip(tmp_path: Path, suffix: str, channels: int) -> None:
    """Pillow cannot hold 16-bit colour; our writer + split-byte reader must."""
    values = rand16(6, 7, channels)
    pic = picture_from_array(values)
    assert pic.bit_depth == 16
    out = save_image(pic, tmp_path / f"c16{suffix}")
    back = load_image(out)
    assert back.bit_depth == 16 and not back.grayscale
    assert np.abs(to_uint(back.rgb, 16).astype(int) - values[..., :3]).max() <= 1
    if channels == 4:
        assert np.abs(to_uint(back.alpha, 16).astype(int) - values[..., 3]).max() <= 1
    else:
        assert back.alpha is None


def _png_idat_samples(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Independent minimal reader for our PNG: IHDR + Sub-filtered 16-bit rows."""
    data = path.read_bytes()
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert ihdr is not None
    w, h, depth, ctype = ihdr[:4]
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * channels * 2)
    assert (raw[:, 0] == 1).all()  # Sub filter
    bpp = channels * 2
    rows = raw[:, 1:].reshape(h, w, bpp)
    rows = np.cumsum(rows, axis=1, dtype=np.uint8)  # undo Sub: running sum mod 256
    samples = rows.reshape(h, w * bpp).view(">u2").reshape(h, w, channels)
    return ihdr, samples


def test_png16_rgb_file_is_really_16_bit(tmp_path: Path) -> None:
    values = rand16(4, 5, 3)
    out = save_image(picture_from_array(values), tmp_path / "deep.png")
    ihdr, samples = _png_idat_samples(out)
    assert ihdr[2:4] == (16, 2)
    assert np.array_equal(samples, values)
    with Image.open(out) as im:  # Pillow itself sees a (truncated) valid PNG
        assert im.mode == "RGB"
        assert np.array_equal(np.asarray(im), (values >> 8).astype(np.uint8))


def test_tiff16_rgb_file_layout(tmp_path: Path) -> None:
    """Check the stored samples independently of Pillow's decoder (several strips)."""
    values = rand16(200, 1000, 3)  # 6000-byte rows -> 174 rows per 1 MiB strip -> 2 strips
    out = save_image(picture_from_array(values), tmp_path / "deep.tif")
    assert np.array_equal(to_uint(load_image(out), 16), values)
    with Image.open(out) as im:
        assert im.tag_v2[258] == (16, 16, 16)
        assert im.tag_v2[277] == 3
        assert im.tag_v2[259] == 8  # Adobe deflate
        offsets, counts = im.tag_v2[273], im.tag_v2[279]
        assert len(offsets) == 2
    data = out.read_bytes()
    raw = b"".join(zlib.decompress(data[o : o + n]) for o, n in zip(offsets, counts, strict=True))
    assert np.array_equal(np.frombuffer(raw, "<u2").reshape(values.shape), values)


def test_gray_alpha16(tmp_path: Path) -> None:
    gray, alpha = rand16(5, 6), rand16(5, 6)
    pic = picture_from_array(np.dstack([gray, alpha]))
    assert pic.grayscale and pic.bit_depth == 16
    png = load_image(save_image(pic, tmp_path / "ga.png"))
    assert png.grayscale and png.bit_depth == 16
    assert np.abs(to_uint(png.rgb[..., 1], 16).astype(int) - gray).max() <= 1
    assert np.abs(to_uint(png.alpha, 16).astype(int) - alpha).max() <= 1
    tif = load_image(save_image(pic, tmp_path / "ga.tif"))  # written as RGBA 16
    assert tif.bit_depth == 16
    assert np.abs(to_uint(tif.rgb[..., 0], 16).astype(int) - gray).max() <= 1
    assert np.abs(to_uint(tif.alpha, 16).astype(int) - alpha).max() <= 1


def test_16_bit_to_jpeg_is_8_bit(tmp_path: Path) -> None:
    pic = picture_from_array(rand16(4, 4, 3))
    with Image.open(save_image(pic, tmp_path / "x.jpg")) as im:
        assert im.mode == "RGB"


def test_bit_depth_override(tmp_path: Path) -> None:
    values = rand16(4, 4, 3)
    out = save_image(picture_from_array(values), tmp_path / "x.png", bit_depth=8)
    with Image.open(out) as im:
        assert np.array_equal(np.asarray(im), to_uint(values.astype(np.float32) / 65535, 8))


# --------------------------------------------------------------------------- alpha / modes


def test_alpha_kept_and_reattached(tmp_path: Path) -> None:
    rgba = rand8(6, 5, 4)
    src = tmp_path / "a.png"
    Image.fromarray(rgba).save(src)
    pic = load_image(src)
    assert pic.alpha is not None and pic.alpha.shape == (6, 5)
    restored = pic.with_rgb(1.0 - pic.rgb)
    with Image.open(save_image(restored, tmp_path / "b.png")) as im:
        assert im.mode == "RGBA"
        out = np.asarray(im)
    assert np.array_equal(out[..., 3], rgba[..., 3])
    assert np.array_equal(out[..., :3], 255 - rgba[..., :3])
    with Image.open(save_image(restored, tmp_path / "b.jpg")) as im:
        assert im.mode == "RGB"  # JPEG has no alpha: dropped
    with Image.open(save_image(restored, tmp_path / "b.bmp")) as im:
        assert im.mode == "RGB"  # BMP alpha is ignored by readers: dropped


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
def test_alpha_round_trip_per_format(tmp_path: Path, suffix: str) -> None:
    rgba = rand8(5, 4, 4)
    back = load_image(save_image(picture_from_array(rgba), tmp_path / f"a{suffix}", quality=100))
    assert back.alpha is not None
    assert np.array_equal(to_uint(back.alpha, 8), rgba[..., 3])
    assert np.array_equal(to_uint(back, 8), rgba[..., :3])


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_gray_alpha8_round_trip(tmp_path: Path, suffix: str) -> None:
    la = rand8(5, 4, 2)
    out = save_image(picture_from_array(la), tmp_path / f"la{suffix}")
    with Image.open(out) as im:
        assert im.mode == "LA"
    back = load_image(out)
    assert back.grayscale and np.array_equal(to_uint(back.alpha, 8), la[..., 1])
    assert np.array_equal(to_uint(back.rgb[..., 2], 8), la[..., 0])


def test_with_rgb_resizes_alpha(tmp_path: Path) -> None:
    pic = picture_from_array(np.zeros((4, 6, 3), np.float32), alpha=np.ones((4, 6), np.float32))
    big = pic.with_rgb(np.zeros((8, 12, 3), np.float32))
    assert big.alpha is not None and big.alpha.shape == (8, 12)
    assert np.allclose(big.alpha, 1.0)
    assert big.size == (12, 8) and pic.size == (6, 4)
    plain = picture_from_array(np.zeros((4, 6, 3), np.uint8)).with_rgb(np.zeros((8, 12, 3)))
    assert plain.alpha is None and plain.rgb.dtype == np.float32


def test_palette_images(tmp_path: Path) -> None:
    pixels = rand8(6, 6, 3)
    pal = Image.fromarray(pixels).quantize(colors=8)
    pal.save(tmp_path / "p.png")
    pic = load_image(tmp_path / "p.png")
    assert pic.alpha is None and not pic.grayscale and pic.bit_depth == 8
    assert np.array_equal(to_uint(pic, 8), np.asarray(pal.convert("RGB")))

    pal.save(tmp_path / "pt.png", transparency=0)
    pic = load_image(tmp_path / "pt.png")
    assert pic.alpha is not None
    with Image.open(tmp_path / "pt.png") as im:
        expected = np.asarray(im.convert("RGBA"))
    assert np.array_equal(to_uint(pic.alpha, 8), expected[..., 3])
    assert (expected[..., 3] == 0).any()

    pal.save(tmp_path / "p.gif")
    assert load_image(tmp_path / "p.gif").format == "GIF"


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_loads_as_rgb_and_drops_cmyk_profile(tmp_path: Path, suffix: str) -> None:
    cmyk = Image.fromarray(rand8(4, 4, 3)).convert("CMYK")
    src = tmp_path / f"cmyk{suffix}"
    cmyk.save(src)
    pic = load_image(src)
    assert pic.rgb.shape == (4, 4, 3) and pic.icc_profile is None and not pic.grayscale
    expected = np.asarray(Image.open(src).convert("RGB"))
    assert np.array_equal(to_uint(pic, 8), expected)


@pytest.mark.parametrize(("mode", "gray"), [("1", True), ("L", True), ("LA", True), ("YCbCr", False), ("F", True)])
def test_other_modes(tmp_path: Path, mode: str, gray: bool) -> None:
    im = Image.fromarray(rand8(4, 5, 3)).convert(mode)
    src = tmp_path / ("m.tif" if mode in ("F", "YCbCr") else "m.png")
    if mode == "F":
        im = Image.fromarray(RNG.random((4, 5), dtype=np.float32))
    im.save(src)
    pic = load_image(src)
    assert pic.grayscale is gray
    assert pic.rgb.shape == (4, 5, 3)
    assert 0.0 <= pic.rgb.min() and pic.rgb.max() <= 1.0
    assert (pic.alpha is not None) is (mode == "LA")
    if mode == "F":
        assert pic.bit_depth == 16
        assert np.allclose(pic.rgb[..., 0], np.asarray(im))


def test_grayscale_source_saved_as_gray(tmp_path: Path) -> None:
    gray = rand8(5, 5)
    Image.fromarray(gray).save(tmp_path / "g.png")
    pic = load_image(tmp_path / "g.png")
    assert pic.grayscale and pic.bit_depth == 8
    for suffix in (".png", ".jpg", ".tif"):
        with Image.open(save_image(pic, tmp_path / f"o{suffix}")) as im:
            assert im.mode == "L"
    with Image.open(tmp_path / "o.png") as im:
        assert np.array_equal(np.asarray(im), gray)
    tinted = pic.with_rgb(np.dstack([pic.rgb[..., 0], np.zeros((5, 5)), pic.rgb[..., 2]]))
    with Image.open(save_image(tinted, tmp_path / "c.png")) as im:
        assert im.mode == "L"  # a gray source stays gray: a result's colour cast is written as its luma
        luma = tinted.rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        assert np.abs(np.asarray(im).astype(int) - np.rint(luma * 255)).max() <= 1


# --------------------------------------------------------------------------- EXIF / ICC


def test_exif_orientation_6_applied_and_reset(tmp_path: Path) -> None:
    pixels = rand8(4, 6, 3)  # 6 wide, 4 high as stored
    src = tmp_path / "rot.png"
    Image.fromarray(pixels).save(src, exif=exif_bytes(6))
    pic = load_image(src)
    assert pic.size == (4, 6)  # displayed portrait
    assert np.array_equal(to_uint(pic, 8), np.rot90(pixels, -1))
    exif = Image.Exif()
    exif.load(pic.exif)
    assert exif[0x0112] == 1 and exif[0x010F] == "TestCam"
    for suffix in (".png", ".jpg", ".tif", ".webp"):
        out = save_image(pic, tmp_path / f"o{suffix}", quality=100)
        with Image.open(out) as im:
            assert im.getexif().get(0x0112, 1) == 1
            assert im.getexif().get(0x010F) == "TestCam"
        back = load_image(out)
        assert back.size == (4, 6)  # not rotated a second time
    assert np.array_equal(to_uint(load_image(tmp_path / "o.png"), 8), np.rot90(pixels, -1))


def test_jpeg_orientation(tmp_path: Path) -> None:
    src = tmp_path / "rot.jpg"
    Image.fromarray(rand8(8, 16, 3)).save(src, exif=exif_bytes(6))
    pic = load_image(src)
    assert pic.size == (8, 16)
    assert pic.exif is not None and pic.exif.startswith(b"Exif\x00\x00")
    exif = Image.Exif()
    exif.load(pic.exif)
    assert exif[0x0112] == 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_pillow(tmp_path: Path, orientation: int) -> None:
    src = tmp_path / "o.png"
    Image.fromarray(rand8(3, 5, 3)).save(src, exif=exif_bytes(orientation))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(src)))
    assert np.array_equal(to_uint(load_image(src), 8), expected)


def test_tiff_orientation_applied_once(tmp_path: Path) -> None:
    pixels = rand8(4, 6, 3)
    src = tmp_path / "rot.tif"
    Image.fromarray(pixels).save(src, exif=exif_bytes(6))
    pic = load_image(src)
    assert np.array_equal(to_uint(pic, 8), np.rot90(pixels, -1))
    assert pic.exif is not None
    exif = Image.Exif()
    exif.load(pic.exif)
    assert exif.get(0x010F) == "TestCam" and exif.get(0x0112, 1) == 1
    assert 273 not in exif and 256 not in exif  # TIFF layout tags are not EXIF


def test_icc_profile_carried(tmp_path: Path) -> None:
    icc = srgb_icc()
    src = tmp_path / "icc.png"
    Image.fromarray(rand8(4, 4, 3)).save(src, icc_profile=icc, exif=exif_bytes())
    pic = load_image(src)
    assert pic.icc_profile == icc
    for suffix in (".png", ".jpg", ".tif", ".webp"):
        with Image.open(save_image(pic, tmp_path / f"o{suffix}")) as im:
            assert im.info.get("icc_profile") == icc, suffix
    deep = Picture(**{**pic.__dict__, "bit_depth": 16, "source": None})
    for suffix in (".png", ".tif"):
        back = load_image(save_image(deep, tmp_path / f"d{suffix}"))
        assert back.icc_profile == icc and back.bit_depth == 16, suffix
        exif = Image.Exif()
        exif.load(back.exif)
        assert exif[0x010F] == "TestCam", suffix


def test_rgb_profile_not_put_on_gray_output(tmp_path: Path) -> None:
    pic = picture_from_array(rand8(4, 4))
    pic.icc_profile = srgb_icc()
    with Image.open(save_image(pic, tmp_path / "g.png")) as im:
        assert im.mode == "L" and "icc_profile" not in im.info


def test_jpeg_subsampling_follows_quality(tmp_path: Path) -> None:
    pic = picture_from_array(rand8(16, 16, 3))
    with Image.open(save_image(pic, tmp_path / "hi.jpg", quality=95)) as im:
        assert JpegImagePlugin.get_sampling(im) == 0
    with Image.open(save_image(pic, tmp_path / "lo.jpg", quality=70)) as im:
        assert JpegImagePlugin.get_sampling(im) == 2


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_corrupt(tmp_path: Path, fmt: str) -> None:
    good = tmp_path / "good"
    Image.fromarray(rand8(32, 32, 3)).save(good, format=fmt)
    data = good.read_bytes()
    bad = tmp_path / f"broken.{fmt.lower()}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImageError, match="broken"):
        load_image(bad)
    bad.write_bytes(data[:20])  # header cut short: still "damaged", not "not an image"
    with pytest.raises(CorruptImageError):
        load_image(bad)


def test_empty_file_is_corrupt(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(CorruptImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")


def test_text_file_is_unsupported(tmp_path: Path) -> None:
    txt = tmp_path / "notes.jpg"
    txt.write_text("shopping list\n")
    with pytest.raises(UnsupportedImageError, match="notes.jpg"):
        load_image(txt)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found") as info:
        load_image(tmp_path / "nope.png")
    assert type(info.value) is ImageError


def test_too_large_checked_before_decoding(tmp_path: Path) -> None:
    # A PNG header claiming 50000 x 50000 with no pixel data: decoding would fail
    # or exhaust memory, so getting ImageTooLargeError proves we never decoded.
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 64)
    idat_chunk = struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + idat_chunk)
    with pytest.raises(ImageTooLargeError) as info:
        load_image(bomb)
    assert "2,500,000,000" in str(info.value) and f"{DEFAULT_MAX_PIXELS:,}" in str(info.value)

    small = tmp_path / "small.png"
    Image.fromarray(rand8(20, 20, 3)).save(small)
    with pytest.raises(ImageTooLargeError, match="400 pixels"):
        load_image(small, max_pixels=100)


def test_our_limit_overrides_pillows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # Pillow would refuse 20x20
    src = tmp_path / "ok.tif"
    Image.fromarray(rand8(20, 20, 3)).save(src)
    assert load_image(src, max_pixels=1000).size == (20, 20)
    assert Image.MAX_IMAGE_PIXELS == 50  # restored


# --------------------------------------------------------------------------- safe writing


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    pic = picture_from_array(rand8(4, 4, 3))
    dest = tmp_path / "out.png"
    dest.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="out.png"):
        save_image(pic, dest)
    assert dest.read_bytes() == b"precious"
    assert no_temp_files(tmp_path)
    save_image(pic, dest, overwrite=True)
    assert load_image(dest).size == (4, 4)


def test_refuses_to_overwrite_source_via_other_spelling(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    src = tmp_path / "photo.png"
    Image.fromarray(rand8(4, 4, 3)).save(src)
    before = src.read_bytes()
    pic = load_image(src)
    other = tmp_path / "sub" / ".." / "photo.png"
    with pytest.raises(OutputExistsError, match="original"):
        save_image(pic, other)
    link = tmp_path / "alias.png"
    try:
        link.symlink_to(src)
    except OSError:
        link = None
    if link is not None:
        with pytest.raises(OutputExistsError, match="original"):
            save_image(pic, link)
    assert src.read_bytes() == before
    save_image(pic.with_rgb(pic.rgb * 0.5), other, overwrite=True)
    assert src.read_bytes() != before


def test_full_disk_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_write_all", full_disk)
    pic = picture_from_array(rand8(8, 8, 3))
    dest = tmp_path / "old.png"
    dest.write_bytes(b"old contents")
    with pytest.raises(StudioError, match="disk space.*old.png"):
        save_image(pic, dest, overwrite=True)
    assert dest.read_bytes() == b"old contents"
    with pytest.raises(StudioError, match="disk space"):
        save_image(pic, tmp_path / "new.tif", bit_depth=16)
    assert not (tmp_path / "new.tif").exists()
    assert no_temp_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.png"]


def test_unknown_suffix_lists_supported(tmp_path: Path) -> None:
    pic = picture_from_array(rand8(2, 2, 3))
    with pytest.raises(UnsupportedImageError, match=r"\.png"):
        save_image(pic, tmp_path / "x.heic")
    out = save_image(pic, tmp_path / "x.heic", format="jpg")
    with Image.open(out) as im:
        assert im.format == "JPEG"
    assert ".png" in SUPPORTED_WRITE_FORMATS and ".bmp" in SUPPORTED_WRITE_FORMATS


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        save_image(picture_from_array(rand8(2, 2, 3)), tmp_path / "nope" / "x.png")


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saved_file_has_normal_permissions(tmp_path: Path) -> None:
    out = save_image(picture_from_array(rand8(2, 2, 3)), tmp_path / "x.png")
    assert out.stat().st_mode & 0o044  # readable by others (not mkstemp's 0600)


# --------------------------------------------------------------------------- helpers


def test_output_path_for(tmp_path: Path) -> None:
    src = tmp_path / "photo.jpg"
    assert output_path_for(src, None) == tmp_path / "photo_restored.jpg"
    assert output_path_for(src, None, suffix="_x") == tmp_path / "photo_x.jpg"
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    assert output_path_for(src, out_dir) == out_dir / "photo_restored.jpg"
    assert output_path_for(src, str(tmp_path / "new") + "/") == tmp_path / "new" / "photo_restored.jpg"
    assert output_path_for(src, tmp_path / "chosen.png") == tmp_path / "chosen.png"
    assert output_path_for(tmp_path / "IMG.JPG") == tmp_path / "IMG_restored.JPG"
    assert output_path_for(tmp_path / "anim.gif") == tmp_path / "anim_restored.png"


def test_to_uint_rounds_and_clips() -> None:
    x = np.array([-0.5, 0.0, 0.6 / 255, 1.49 / 255, 0.5, 1.0, 7.0, np.nan], np.float32)
    assert to_uint(x, 8).tolist() == [0, 0, 1, 1, 128, 255, 255, 0]
    assert to_uint(x, 16).dtype == np.uint16 and to_uint(x, 16)[5] == 65535
    with pytest.raises(ValueError):
        to_uint(x, 12)


def test_picture_from_array_variants() -> None:
    gray = picture_from_array(np.full((2, 3), 255, np.uint8))
    assert gray.grayscale and gray.rgb.shape == (2, 3, 3) and np.all(gray.rgb == 1.0)
    rgba = picture_from_array(np.zeros((2, 3, 4), np.float64))
    assert rgba.alpha is not None and rgba.rgb.dtype == np.float32 and rgba.bit_depth == 8
    deep = picture_from_array(np.zeros((2, 3, 3), np.uint16))
    assert deep.bit_depth == 16
    with pytest.raises(ValueError):
        picture_from_array(np.zeros((2, 3, 5), np.uint8))
    with pytest.raises(TypeError):
        picture_from_array(np.zeros((2, 3), np.int64))


@pytest.mark.parametrize("bits", [8, 16])
def test_quantising_a_big_float_photo_costs_its_integer_copy_not_a_float_one(bits):
    """Saving a 48 MP up-scaled photo must not hold a second full float copy (2 GB process budget)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    rgb = rng.uniform(-0.1, 1.1, (1500, 1000, 3)).astype(np.float32)  # 18 MB
    rgb[0, 0] = np.nan
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = to_uint(rgb, bits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < out.nbytes + rgb.nbytes / 4, f"peak {peak / 1e6:.1f} MB for a {out.nbytes / 1e6:.1f} MB result"
    top = 2**bits - 1
    expected = np.rint(np.nan_to_num(np.clip(rgb, 0, 1)) * top)
    assert out.dtype == (np.uint8 if bits == 8 else np.uint16)
    assert np.array_equal(out, expected.astype(out.dtype))
