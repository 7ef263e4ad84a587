"""The preprocessing spec: presets' numbers, each step on hand-made images, parsing, manifest, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.data import FASHION_MNIST_MEAN, FASHION_MNIST_PREPROCESS, FASHION_MNIST_STD, PRESETS, Preprocess
from edgekit.errors import DataError


def gradient(h: int, w: int) -> Image.Image:
    """An RGB image whose R is the column, G the row and B constant: each crop and flip is visible."""
    rows, cols = np.mgrid[0:h, 0:w]
    rgb = np.stack([cols * 5 % 256, rows * 7 % 256, np.full((h, w), 200)], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def solid(rgb: tuple[int, int, int], size: int = 4) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


# --- presets -----------------------------------------------------------------------------------


def test_presets_are_the_documented_mappings() -> None:
    assert set(PRESETS) == {"imagenet", "minus1-1", "0-1", "raw", "inception"}
    imagenet = Preprocess.from_preset("imagenet")
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.std == (0.229, 0.224, 0.225)
    pixels = np.array([[[0, 127, 255]]], np.uint8)  # one pixel per channel value, channels last
    mapped = {name: Preprocess.from_preset(name).map_values(pixels.reshape(3, 1, 1)).ravel() for name in PRESETS}
    # (p - 127) / 128 is exact in float32: 1/128 and 127/128 are binary fractions
    assert mapped["inception"].tolist() == [-127 / 128, 0.0, 1.0]
    np.testing.assert_allclose(mapped["minus1-1"], [-1.0, 127 / 127.5 - 1, 1.0], atol=1e-6)
    np.testing.assert_allclose(mapped["0-1"], [0.0, 127 / 255, 1.0], atol=1e-7)
    assert mapped["raw"].tolist() == [0.0, 127.0, 255.0]


def test_imagenet_mean_std_per_channel() -> None:
    out = Preprocess.from_preset("imagenet").apply(solid((255, 128, 0)))
    assert out.shape == (3, 4, 4) and out.dtype == np.float32
    expected = [(1.0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0.0 - 0.406) / 0.225]
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-6)
    assert np.all(out == out[:, :1, :1])  # a solid image stays solid


def test_default_maps_pixels_to_0_1() -> None:
    spec = Preprocess()
    assert spec.scale == pytest.approx(1 / 255) and spec.offset == 0.0 and spec.mean is None
    out = spec.apply(solid((255, 0, 51)))
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 0.0, 0.2], atol=1e-7)


def test_mean_std_matches_fashion_normalize_bit_for_bit() -> None:
    from edgekit.data import normalize

    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every 8-bit value once
    # the example's spec without its resize to 28×28, so that all 256 values are compared
    spec = Preprocess(grayscale=True, mean=(FASHION_MNIST_MEAN,), std=(FASHION_MNIST_STD,))
    assert spec == FASHION_MNIST_PREPROCESS.__class__(**{**vars(FASHION_MNIST_PREPROCESS), "resize": None})
    assert np.array_equal(spec.apply(Image.fromarray(pixels, "L"))[0], normalize(pixels))


def test_fashion_preprocess_is_reachable_from_the_example() -> None:
    from edgekit.examples.registry import get_example

    spec = get_example("fashion-cnn").preprocess
    assert spec == FASHION_MNIST_PREPROCESS
    assert spec.grayscale and spec.mean == (0.2860,) and spec.std == (0.3530,)


# --- the steps ---------------------------------------------------------------------------------


def test_resize_short_side_keeps_aspect_ratio() -> None:
    wide = Preprocess(resize=10, scale=1.0).apply(gradient(20, 40))  # H 20, W 40
    tall = Preprocess(resize=10, scale=1.0).apply(gradient(40, 20))
    assert wide.shape == (3, 10, 20) and tall.shape == (3, 20, 10)
    assert Preprocess(resize=7, scale=1.0).apply(gradient(10, 15)).shape == (3, 7, 10)  # int(7 * 15 / 10)


def test_resize_to_exact_height_width() -> None:
    assert Preprocess(resize=(5, 9)).apply(gradient(30, 30)).shape == (3, 5, 9)


def test_resize_is_pillow_bilinear() -> None:
    image = gradient(30, 40)
    out = Preprocess(resize=(12, 16), scale=1.0, offset=0.0).apply(image)
    expected = np.asarray(image.resize((16, 12), Image.Resampling.BILINEAR), np.float32).transpose(2, 0, 1)
    assert np.array_equal(out, expected)


def test_center_crop_takes_the_middle() -> None:
    image = gradient(10, 12)
    out = Preprocess(center_crop=(4, 6), scale=1.0).apply(image)
    full = np.asarray(image, np.float32).transpose(2, 0, 1)
    assert np.array_equal(out, full[:, 3:7, 3:9])
    # odd margins round like torchvision: (11 - 4) / 2 = 3.5 → 4
    out_odd = Preprocess(center_crop=4, scale=1.0).apply(gradient(11, 11))
    assert np.array_equal(out_odd, np.asarray(gradient(11, 11), np.float32).transpose(2, 0, 1)[:, 4:8, 4:8])


def test_center_crop_larger_than_image_is_refused() -> None:
    with pytest.raises(DataError, match="smaller than center_crop"):
        Preprocess(center_crop=20).apply(gradient(10, 10))


def test_grayscale_is_pillow_luma_with_one_channel() -> None:
    image = gradient(6, 6)
    out = Preprocess(grayscale=True, scale=1.0).apply(image)
    assert out.shape == (1, 6, 6)
    assert np.array_equal(out[0], np.asarray(image.convert("L"), np.float32))


def test_bgr_reverses_channels_and_mean_follows_model_order() -> None:
    rgb = Preprocess(scale=1.0).apply(solid((10, 20, 30)))
    bgr = Preprocess(scale=1.0, channel_order="bgr").apply(solid((10, 20, 30)))
    assert rgb[:, 0, 0].tolist() == [10, 20, 30] and bgr[:, 0, 0].tolist() == [30, 20, 10]
    # mean/std are listed in the model's (BGR) order: the first value applies to blue
    out = Preprocess(channel_order="bgr", mean=(30 / 255, 0, 0), std=(1, 1, 1)).apply(solid((10, 20, 30)))
    assert out[0, 0, 0] == pytest.approx(0.0, abs=1e-7)


def test_nhwc_layout() -> None:
    image = gradient(5, 7)
    out = Preprocess(layout="nhwc", scale=1.0).apply(image)
    assert out.shape == (5, 7, 3) and out.flags["C_CONTIGUOUS"]
    assert np.array_equal(out, np.asarray(image, np.float32))


def test_integer_and_half_dtypes() -> None:
    uint8 = Preprocess.from_options("raw", dtype="uint8").apply(solid((0, 128, 255)))
    assert uint8.dtype == np.uint8 and uint8[:, 0, 0].tolist() == [0, 128, 255]
    int8 = Preprocess(scale=1.0, offset=-128.0, dtype="int8").apply(solid((0, 128, 255)))
    assert int8.dtype == np.int8 and int8[:, 0, 0].tolist() == [-128, 0, 127]
    assert Preprocess(dtype="float16").apply(solid((0, 0, 0))).dtype == np.float16
    with pytest.raises(DataError, match="do not fit dtype uint8"):
        Preprocess(scale=2.0, dtype="uint8").apply(solid((200, 0, 0)))


def test_palette_and_alpha_images_convert() -> None:
    rgba = Image.new("RGBA", (3, 3), (10, 20, 30, 0))
    assert Preprocess(scale=1.0).apply(rgba)[:, 0, 0].tolist() == [10, 20, 30]
    gray = Image.new("L", (3, 3), 77)
    assert Preprocess(scale=1.0).apply(gray)[:, 0, 0].tolist() == [77, 77, 77]  # L → RGB repeats


def test_16_bit_images_are_refused() -> None:
    with pytest.raises(DataError, match="I;16"):
        Preprocess().apply(Image.new("I;16", (4, 4)))


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mean": (0.5,), "std": (0.5,), "scale": 1.0}, "both mean/std and scale/offset"),
        ({"mean": (0.5,)}, "std is missing"),
        ({"std": (0.5,)}, "mean is missing"),
        ({"mean": (0.5,), "std": (0.0,)}, "std must be positive"),
        ({"grayscale": True, "mean": (0.5, 0.5, 0.5), "std": (0.5,)}, "3 values but the images have 1 channel"),
        ({"mean": (0.5, 0.5), "std": (0.5,)}, "2 values but the images have 3 channels"),
        ({"offset": -1.0}, "offset needs a scale"),
        ({"scale": 0.0}, "scale must not be 0"),
        ({"scale": float("nan")}, "scale must be a finite number"),
        ({"layout": "chw"}, "layout 'chw' is not one of nchw, nhwc"),
        ({"channel_order": "rbg"}, "channel_order"),
        ({"dtype": "float64"}, "dtype 'float64'"),
        ({"resize": 0}, "resize must be positive"),
        ({"resize": (1, 2, 3)}, "resize must be one size or H,W"),
        ({"center_crop": (0, 5)}, "center_crop must be one size or H,W"),
        ({"grayscale": "yes"}, "grayscale must be true or false"),
    ],
)
def test_bad_values_raise_data_error(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        Preprocess(**kwargs)
    assert info.value.hint  # every error says what to do


def test_spec_is_frozen_and_comparable() -> None:
    spec = Preprocess(resize=[224, 224], mean=[0.5], std=[0.5])
    assert spec.resize == (224, 224) and spec.mean == (0.5,)  # lists normalize to tuples
    assert spec == Preprocess(resize=(224, 224), mean=(0.5,), std=(0.5,))
    with pytest.raises(AttributeError):
        spec.resize = 5  # type: ignore[misc]


def test_unknown_preset() -> None:
    with pytest.raises(DataError, match="unknown preprocess preset 'imagenett'") as info:
        Preprocess.from_preset("imagenett")
    assert "imagenet" in info.value.hint


# --- flags -------------------------------------------------------------------------------------


def test_from_options_none_when_no_flag() -> None:
    assert Preprocess.from_options() is None


def test_from_options_parses_flag_strings() -> None:
    spec = Preprocess.from_options(resize="256", center_crop="224x224", scale="1/128", offset="-127/128",
                                   channel_order="BGR", layout="nhwc", grayscale=False)
    assert spec.resize == 256 and spec.center_crop == (224, 224)
    assert spec.scale == 1 / 128 and spec.offset == -127 / 128
    assert spec.channel_order == "bgr" and spec.layout == "nhwc"
    assert Preprocess.from_options(mean="0.5,0.4,0.3", std="0.2, 0.2, 0.2").mean == (0.5, 0.4, 0.3)


def test_from_options_preset_with_overrides() -> None:
    spec = Preprocess.from_options("imagenet", resize="256", center_crop="224")
    assert spec.preset == "imagenet" and spec.mean == PRESETS["imagenet"]["mean"] and spec.center_crop == (224, 224)
    # a value mapping given by flags replaces the preset's
    replaced = Preprocess.from_options("imagenet", scale="1/255")
    assert replaced.mean is None and replaced.scale == 1 / 255 and replaced.offset == 0.0 and replaced.preset is None
    mean_over_scale = Preprocess.from_options("inception", mean="0.5", std="0.25")
    assert mean_over_scale.scale is None and mean_over_scale.mean == (0.5,)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"scale": "abc"}, "--scale: 'abc' is not a number"),
        ({"resize": "big"}, "--resize: 'big' is not a size"),
        ({"mean": "0.5,x", "std": "1"}, "--mean: 'x' is not a number"),
        ({"center_crop": "1/0"}, "--center-crop"),
        ({"offset": "1/0", "scale": "1"}, "--offset"),
    ],
)
def test_from_options_errors_name_the_flag(flags: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        Preprocess.from_options(**flags)


def test_from_options_preset_can_be_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "pre.yaml"
    path.write_text("preset: inception\nresize: 224\n")
    spec = Preprocess.from_options(str(path), layout="nhwc")
    assert spec.preset == "inception" and spec.resize == 224 and spec.layout == "nhwc"
    with pytest.raises(DataError, match="preprocess file not found"):
        Preprocess.from_options(str(tmp_path / "missing.yaml"))
    with pytest.raises(DataError, match="unknown preprocess preset 'nope'"):
        Preprocess.from_options("nope")


# --- YAML --------------------------------------------------------------------------------------


def test_from_yaml_with_preset_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "pre.yaml"
    path.write_text("preset: imagenet\nresize: 256\ncenter-crop: [224, 224]\nchannel_order: bgr\n")
    spec = Preprocess.from_yaml(path)
    assert (spec.preset, spec.resize, spec.center_crop, spec.channel_order) == ("imagenet", 256, (224, 224), "bgr")
    assert spec.std == (0.229, 0.224, 0.225)


def test_from_yaml_section_and_fractions(tmp_path: Path) -> None:
    path = tmp_path / "pre.yaml"
    path.write_text("preprocess:\n  grayscale: true\n  scale: 1/128\n  offset: -127/128\n  dtype: float16\n")
    spec = Preprocess.from_yaml(path)
    assert spec.grayscale and spec.scale == 1 / 128 and spec.offset == -127 / 128 and spec.dtype == "float16"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("resize: 224\ncolour: rgb\n", "unknown preprocess key .*colour"),
        ("- 224\n", "is not a YAML mapping"),
        ("resize: [224\n", "cannot read .* as YAML"),
        ("preset: imagenet\ngrayscale: true\n", "3 values but the images have 1 channel"),
        ("scale: lots\n", r"pre.yaml: scale: 'lots' is not a number"),
        ("preset: 3\n", "preset must be a name"),
    ],
)
def test_from_yaml_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "pre.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        Preprocess.from_yaml(path)


def test_from_yaml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="preprocess file not found"):
        Preprocess.from_yaml(tmp_path / "none.yaml")


# --- manifest ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        Preprocess(),
        FASHION_MNIST_PREPROCESS,
        Preprocess.from_preset("imagenet"),
        Preprocess.from_options("inception", resize="256", center_crop="224", channel_order="bgr", layout="nhwc"),
        Preprocess(resize=(10, 20), scale=1.0, offset=-128.0, dtype="int8"),
    ],
)
def test_manifest_round_trip_through_json(spec: Preprocess) -> None:
    manifest = json.loads(json.dumps(spec.to_manifest()))
    assert Preprocess.from_manifest(manifest) == spec
    image = gradient(30, 30)
    assert np.array_equal(Preprocess.from_manifest(manifest).apply(image), spec.apply(image))


def test_manifest_writes_only_the_active_mapping_and_a_formula() -> None:
    manifest = FASHION_MNIST_PREPROCESS.to_manifest()
    assert "scale" not in manifest and "offset" not in manifest
    assert manifest["mean"] == [0.286] and manifest["std"] == [0.353] and manifest["resize"] == [28, 28]
    assert manifest["formula"] == "x = (p / 255 - 0.286) / 0.353" and manifest["resample"] == "bilinear"
    inception = Preprocess.from_preset("inception").to_manifest()
    assert "mean" not in inception and inception["scale"] == 1 / 128 and inception["preset"] == "inception"
    assert inception["formula"] == "x = p * 0.0078125 + -0.992188"


def test_from_manifest_rejects_unknown_keys() -> None:
    with pytest.raises(DataError, match="manifest preprocess.colour"):
        Preprocess.from_manifest({"colour": "rgb"})
    with pytest.raises(DataError, match="not a mapping"):
        Preprocess.from_manifest([1, 2])  # type: ignore[arg-type]


def test_describe_is_one_line() -> None:
    assert FASHION_MNIST_PREPROCESS.describe() == "grayscale · resize 28×28 · x = (p / 255 - 0.286) / 0.353 · NCHW float32"
    text = Preprocess.from_options("imagenet", resize="256", center_crop="224").describe()
    assert text.startswith("RGB · resize 256 · center-crop 224×224 · ") and "(imagenet)" in text
