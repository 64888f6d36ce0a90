"""imaging/: sniffing, header checks, orientation, colour, variants, EXIF, with images made
here."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from mediajobs.errors import ImageRejected
from mediajobs.imaging import ImagePolicy, VariantSpec, detect_type, probe, process_image
from mediajobs.imaging.formats import corrected_filename
from tests.support.images import (
    BLUE,
    GREEN,
    RED,
    WHITE,
    animated,
    camera_exif,
    close_to,
    decoded,
    encode,
    heic,
    jpeg,
    oriented_jpeg,
    photo,
    png_bomb,
    quadrants,
)

POLICY = ImagePolicy()


def rejected(code: str, data: bytes, policy: ImagePolicy = POLICY, **kw: str) -> None:
    with pytest.raises(ImageRejected) as info:
        process_image(data, policy, **kw)
    assert info.value.code == code, info.value.message


def assert_quadrants(image: Image.Image) -> None:
    w, h = image.size
    assert w > h  # landscape, as shot
    rgb = image.convert("RGB")
    assert close_to(rgb.getpixel((w // 4, h // 4)), RED)
    assert close_to(rgb.getpixel((3 * w // 4, h // 4)), GREEN)
    assert close_to(rgb.getpixel((w // 4, 3 * h // 4)), BLUE)
    assert close_to(rgb.getpixel((3 * w // 4, 3 * h // 4)), WHITE)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation: int) -> None:
    result = process_image(oriented_jpeg(orientation), POLICY)
    assert (result.width, result.height) == (800, 600)
    for variant in result.variants:
        image = decoded(variant.data) if variant.data else None
        if image is None:
            continue
        assert image.size == (variant.width, variant.height)
        assert_quadrants(image)
        assert "exif" not in image.info


def test_heic_is_decoded_with_its_own_transforms_and_never_rotated_twice() -> None:
    stored = quadrants().transpose(Image.Transpose.ROTATE_90)  # shown upright with tag 6
    exif = Image.Exif()
    exif[0x0112] = 6
    data = heic(stored, exif=exif.tobytes())
    found, _ = probe(data, POLICY)
    result = process_image(data, POLICY, declared_type="", filename="IMG_0001.HEIC")
    assert result.detected_type == "image/heic"
    assert (result.width, result.height) == (found.width, found.height) == (800, 600)
    assert_quadrants(decoded(result.variants[-1].data))


def test_heic_with_no_or_generic_declared_type_is_accepted() -> None:
    data = heic()
    for declared in ("", "application/octet-stream", "image/heif", "image/heic", None):
        assert detect_type(data, declared, "photo.heic") == "image/heic"


def test_cmyk_jpeg_including_adobe_inverted_is_converted_to_rgb() -> None:
    # Pillow writes CMYK JPEGs with the Adobe marker and inverted samples, as Photoshop does.
    cmyk = Image.new("CMYK", (600, 400), (0, 255, 255, 0))  # pure red in CMYK
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).info.get("adobe") is not None
    result = process_image(data, POLICY)
    image = decoded(result.variants[0].data)
    assert image.mode == "RGB"
    assert close_to(image.getpixel((10, 10)), (255, 0, 0), tolerance=30)


def test_plain_cmyk_jpeg_without_the_adobe_marker_is_not_inverted() -> None:
    from PIL import ImageChops

    red = Image.new("CMYK", (600, 400), (0, 255, 255, 0))
    # Pillow writes CMYK inverted with an Adobe marker; invert first and drop the marker, and
    # the file holds plain CMYK samples, as some non-Adobe writers produce.
    adobe = encode(ImageChops.invert(red), "JPEG", quality=95)
    start = adobe.index(b"\xff\xee")
    length = int.from_bytes(adobe[start + 2 : start + 4], "big")
    plain = adobe[:start] + adobe[start + 2 + length :]
    assert Image.open(io.BytesIO(plain)).info.get("adobe") is None
    image = decoded(process_image(plain, POLICY).variants[0].data)
    assert close_to(image.getpixel((10, 10)), (255, 0, 0), tolerance=30)


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    image = Image.new("I;16", (400, 300), 32768)  # mid grey in 16 bits
    result = process_image(encode(image, "PNG"), POLICY)
    pixel = decoded(result.variants[0].data).convert("L").getpixel((5, 5))
    assert isinstance(pixel, int) and 120 <= pixel <= 136


def test_palette_png_with_transparency_keeps_alpha() -> None:
    image = Image.new("P", (400, 300), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (200, 0, 400, 300))
    data = encode(image, "PNG", transparency=0)
    result = process_image(data, POLICY)
    assert result.has_alpha
    out = decoded(result.variants[0].data)
    assert out.mode == "RGBA"
    assert out.getpixel((10, 10))[3] == 0  # type: ignore[index]
    assert close_to(out.getpixel((out.width - 5, 10)), (0, 0, 255))


def test_alpha_png_keeps_alpha_and_grey_stays_grey() -> None:
    rgba = Image.new("RGBA", (400, 300), (10, 200, 10, 128))
    out = decoded(process_image(encode(rgba, "PNG"), POLICY).variants[0].data)
    assert out.mode == "RGBA"
    assert abs(out.getpixel((5, 5))[3] - 128) <= 3  # type: ignore[index]
    grey = Image.linear_gradient("L").resize((400, 300))
    out = decoded(process_image(encode(grey, "PNG"), POLICY).variants[0].data)
    r, g, b = out.convert("RGB").getpixel((200, 150))  # type: ignore[misc]
    assert r == g == b


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_animated_inputs_give_their_first_frame(fmt: str) -> None:
    result = process_image(animated(fmt), POLICY)
    assert result.frames == 3
    assert close_to(decoded(result.variants[0].data).getpixel((5, 5)), RED)


def test_gps_is_extracted_but_absent_from_every_variant() -> None:
    data = jpeg(photo(1200, 900), exif=camera_exif(gps=True))
    result = process_image(data, POLICY)
    assert result.gps == {"latitude": 52.3701389, "longitude": 4.8916667, "altitude": 12.0}
    assert result.exif["make"] == "Canon"
    assert result.exif["model"] == "EOS R5"
    assert result.exif["iso"] == 400
    assert result.exif["aperture"] == 2.8
    assert result.exif["exposure"] == "1/125"
    assert result.exif["focalLength"] == 50.0
    assert result.exif["takenAt"] == "2024-05-06T07:08:09"
    assert "RF50mm" in str(result.exif["lens"])
    assert "latitude" not in result.exif
    for variant in result.variants:
        if not variant.data:
            continue
        assert b"EXIF" not in variant.data and b"Exif" not in variant.data
        assert b"Canon" not in variant.data and b"GPS" not in variant.data
        assert not decoded(variant.data).getexif()
    assert b"EXIF" not in base64.b64decode(result.blur_data_url.split(",", 1)[1])


@pytest.mark.parametrize(
    ("filename", "declared"),
    [
        ("IMG_0001.HEIC", "image/jpeg"),
        ("IMG_0001.HEIC", "image/heic"),
        ("holiday.png", "image/png"),
        ("holiday.PNG", ""),
        ("photo.gif", "image/gif"),
        ("scan", "application/octet-stream"),
        (None, None),
    ],
)
def test_the_bytes_decide_the_type_whatever_the_name_or_declaration(
    filename: str | None, declared: str | None
) -> None:
    result = process_image(jpeg(), POLICY, declared_type=declared, filename=filename)
    assert result.detected_type == "image/jpeg"
    assert detect_type(encode(quadrants(), "PNG"), declared, filename) == "image/png"
    assert detect_type(encode(quadrants(), "WEBP"), declared, filename) == "image/webp"


def test_bytes_of_no_accepted_format_are_refused_whatever_they_claim() -> None:
    gif = encode(quadrants(), "GIF")
    for data in (gif, encode(quadrants(), "BMP"), b"<svg onload=alert(1)>", b"just text here"):
        for declared, name in (("image/jpeg", "a.jpg"), ("", "a.heic"), (None, None)):
            with pytest.raises(ImageRejected) as info:
                detect_type(data, declared, name)
            assert info.value.code == "unsupported_type"
    with pytest.raises(ImageRejected) as info:
        detect_type(gif, "image/jpeg", "party.jpg")
    assert "image/gif" in info.value.message and "party.jpg" in info.value.message


@pytest.mark.parametrize(
    ("name", "detected", "corrected"),
    [
        ("IMG_0001.HEIC", "image/jpeg", "IMG_0001.jpg"),
        ("IMG_0001.heic", "image/heic", "IMG_0001.heic"),
        ("IMG_0001.HEIF", "image/heic", "IMG_0001.HEIF"),  # one family
        ("holiday.JPEG", "image/jpeg", "holiday.JPEG"),
        ("holiday.png", "image/jpeg", "holiday.jpg"),
        ("party.gif", "image/webp", "party.webp"),
        ("pic.jpg", "image/avif", "pic.avif"),
        ("IMG_0001", "image/png", "IMG_0001.png"),
        ("scan.v2", "image/jpeg", "scan.v2.jpg"),
        ("🌅.jpg", "image/heif", "🌅.heif"),
        (".jpg", "image/png", ".png"),
    ],
)
def test_the_file_name_gets_the_extension_of_what_the_bytes_are(
    name: str, detected: str, corrected: str
) -> None:
    assert corrected_filename(name, detected) == corrected


def test_truncated_file_is_corrupt() -> None:
    data = jpeg(photo(1200, 900))
    rejected("corrupt_image", data[: len(data) // 2])
    rejected("corrupt_image", encode(quadrants(), "PNG")[:200])


def test_decompression_bomb_is_refused_from_the_header_before_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bomb = png_bomb()
    assert len(bomb) < 4096  # 1.6 gigapixels in a few kilobytes

    def no_decode(self: Image.Image) -> None:
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(Image.Image, "load", no_decode)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decode)
    rejected("too_many_pixels", bomb)
    # With a policy cap above it, Pillow's own guard (which stays on) still refuses it.
    rejected("too_many_pixels", bomb, ImagePolicy(max_megapixels=100_000))


def test_policy_limits_and_other_refusals() -> None:
    rejected("empty_file", b"")
    rejected("file_too_large", jpeg(), ImagePolicy(max_bytes=1000))
    rejected("unsupported_type", b"hello, I am text, not an image at all")
    rejected("unsupported_type", encode(quadrants(), "GIF"))
    rejected("too_small", jpeg(quadrants(150, 120)))
    rejected("aspect_ratio_out_of_range", jpeg(quadrants(1000, 200)))
    # Limits apply to the upright size: 300x800 stored, shown 800x300 (aspect 2.67).
    data = oriented_jpeg(6, quadrants(800, 300))
    policy = ImagePolicy(min_width=700, min_height=250, max_aspect=3.0)
    found, _ = probe(data, policy)
    assert (found.width, found.height, found.stored_width) == (800, 300, 300)


def test_variants_are_webp_never_upscaled_and_equal_sizes_are_shared() -> None:
    result = process_image(jpeg(quadrants(900, 600)), POLICY)
    by_name = {v.name: v for v in result.variants}
    assert [v.name for v in result.variants] == ["thumb", "card", "preview", "detail", "detail_xl"]
    assert (by_name["thumb"].width, by_name["thumb"].height) == (320, 213)
    assert (by_name["card"].width, by_name["card"].height) == (640, 427)
    assert (by_name["detail_xl"].width, by_name["detail_xl"].height) == (900, 600)
    assert (
        by_name["detail_xl"].data.startswith(b"RIFF") and by_name["detail_xl"].data[8:12] == b"WEBP"
    )
    shared = {name for name, v in by_name.items() if v.same_as}
    assert shared == {"preview", "detail"}
    assert by_name["preview"].same_as == "detail_xl" and not by_name["preview"].data


def test_large_photo_uses_the_configured_sizes_quality_and_blur() -> None:
    policy = ImagePolicy(variants=(VariantSpec("small", 300), VariantSpec("big", 1000)), quality=60)
    result = process_image(jpeg(photo(4032, 3024)), policy)
    assert [(v.name, v.width, v.height) for v in result.variants] == [
        ("small", 300, 225),
        ("big", 1000, 750),
    ]
    assert result.blur_data_url.startswith("data:image/webp;base64,")
    assert len(result.blur_data_url) <= 1024
    blur = decoded(base64.b64decode(result.blur_data_url.split(",", 1)[1]))
    assert max(blur.size) <= 16
    assert len(result.sha256) == 64


def test_embedded_icc_profile_is_applied_and_not_carried_over() -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = jpeg(quadrants(), icc_profile=srgb)
    out = decoded(process_image(data, POLICY).variants[0].data)
    assert "icc_profile" not in out.info
    assert_quadrants(out)


def test_avif_is_sniffed_and_processed_when_pillow_decodes_it() -> None:
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    data = encode(quadrants(), "AVIF", quality=90)
    result = process_image(data, POLICY, declared_type="", filename="photo.avif")
    assert result.detected_type == "image/avif"
    assert_quadrants(decoded(result.variants[-1].data))
    mislabelled = process_image(data, POLICY, declared_type="image/jpeg", filename="p.jpg")
    assert mislabelled.detected_type == "image/avif"


def test_pixels_are_converted_to_srgb_through_the_embedded_profile() -> None:
    from tests.support.images import swapped_primaries_icc

    profile = swapped_primaries_icc()
    red_in_profile = Image.new("RGB", (400, 300), (230, 20, 20))  # blue, in this profile
    out = decoded(process_image(jpeg(red_in_profile, icc_profile=profile), POLICY).variants[0].data)
    r, g, b = out.convert("RGB").getpixel((10, 10))  # type: ignore[misc]
    assert b > 150 and r < 80, (r, g, b)
    assert "icc_profile" not in out.info
    # With alpha: the colour is converted and the alpha kept.
    rgba = Image.new("RGBA", (400, 300), (230, 20, 20, 100))
    out = decoded(process_image(encode(rgba, "PNG", icc_profile=profile), POLICY).variants[0].data)
    r, g, b, a = out.getpixel((10, 10))  # type: ignore[misc]
    assert b > 150 and r < 80 and abs(a - 100) <= 3, (r, g, b, a)
