"""Real-world images decode to upright RGB; bad ones raise ImageError naming the file."""

import io

import numpy as np
import pytest
from PIL import Image

from network_expansion.errors import ImageError
from network_expansion.images import load_image


def _photo():
    """A small real photo (scikit-image's cat), 60x90."""
    from skimage import data

    return np.asarray(Image.fromarray(data.chelsea()).resize((90, 60)))


@pytest.mark.parametrize("suffix,options", [(".jpg", {"quality": 95}), (".png", {}), (".webp", {"lossless": True}),
                                            (".bmp", {}), (".tiff", {})])
def test_common_formats_decode_to_rgb(tmp_path, suffix, options):
    path = tmp_path / f"cat{suffix}"
    Image.fromarray(_photo()).save(path, **options)
    decoded = load_image(path)
    assert decoded.shape == (60, 90, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - _photo()).mean() < 3  # lossy JPEG allowed a little


def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.fromarray(_photo()).convert("L").save(tmp_path / "g.png")
    decoded = load_image(tmp_path / "g.png")
    assert decoded.shape == (60, 90, 3)
    assert (decoded[..., 0] == decoded[..., 1]).all() and (decoded[..., 1] == decoded[..., 2]).all()


def test_palette_images_decode_with_and_without_transparency(tmp_path):
    palette = Image.fromarray(_photo()).convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (60, 90, 3)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "pt.png", transparency=0)
    decoded = load_image(tmp_path / "pt.png")
    transparent = np.asarray(Image.open(tmp_path / "pt.png")) == 0
    assert (decoded[transparent] == 255).all()  # composited on white


def test_transparent_pixels_are_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200                 # red
    rgba[:2, :, 3] = 255               # top half opaque
    rgba[2:, :, 3] = 0                 # bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    decoded = load_image(tmp_path / "a.png")
    assert (decoded[:2] == [200, 0, 0]).all() and (decoded[2:] == 255).all()


def test_cmyk_jpeg_decodes_to_rgb(tmp_path):
    Image.fromarray(_photo()).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    decoded = load_image(tmp_path / "c.jpg")
    assert decoded.shape == (60, 90, 3)
    assert np.abs(decoded.astype(int) - _photo()).mean() < 8


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 4).astype(np.uint16).reshape(4, 64)
    Image.fromarray(ramp).save(tmp_path / "16.png")
    assert Image.open(tmp_path / "16.png").mode.startswith("I")
    decoded = load_image(tmp_path / "16.png")
    np.testing.assert_allclose(decoded[..., 0], ramp / 257.0, atol=1)


def test_exif_orientation_is_applied(tmp_path):
    photo = _photo()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display after rotating 90 degrees clockwise
    Image.fromarray(photo).save(tmp_path / "r.jpg", exif=exif, quality=95)
    decoded = load_image(tmp_path / "r.jpg")
    assert decoded.shape == (90, 60, 3)
    upright = np.rot90(photo, k=-1)
    assert np.abs(decoded.astype(int) - upright).mean() < 3


def test_pil_images_and_arrays_are_accepted():
    photo = _photo()
    np.testing.assert_array_equal(load_image(Image.fromarray(photo)), photo)
    np.testing.assert_array_equal(load_image(photo), photo)
    assert load_image(photo[..., 0]).shape == (60, 90, 3)
    np.testing.assert_array_equal(load_image(photo / 255.0), photo)
    with pytest.raises(ImageError, match="channels-first"):
        load_image(photo.transpose(2, 0, 1))
    with pytest.raises(ImageError, match=r"values outside \[0, 1\]"):
        load_image(photo.astype(np.float32))


@pytest.mark.parametrize("content,message", [
    (b"", "the file is empty (0 bytes)"),
    (b"hello, I am a text file\n", "not an image Pillow can read"),
])
def test_empty_and_non_image_files_are_named_in_the_error(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_truncated_and_corrupt_files_raise_image_error(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(_photo()).save(buffer, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated.jpg: the image data is damaged"):
        load_image(tmp_path / "truncated.jpg")
    png = io.BytesIO()
    Image.fromarray(_photo()).save(png, "PNG")
    corrupt = bytearray(png.getvalue())
    corrupt[100:140] = b"\x00" * 40
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    with pytest.raises(ImageError, match="corrupt.png: the image data is damaged"):
        load_image(tmp_path / "corrupt.png")


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match=r"bomb.png: 100x100 pixels is above the limit of 2,500 \(a decompression bomb\?\)"):
        load_image(tmp_path / "bomb.png", max_pixels=50 * 50)


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(ImageError, match=f"{tmp_path / 'nope.jpg'}: no such file"):
        load_image(tmp_path / "nope.jpg")
