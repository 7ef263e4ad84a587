"""How an image becomes the numbers a model was trained on: a small, frozen spec.

The same spec is applied on the host (calibration, evaluation), written into the artifact's
manifest (``to_manifest``) so the device and the user's own app reproduce it, and read back
(``from_manifest``). Steps, in order:

1. decode and convert to RGB (``grayscale``: to one luma channel, Pillow's ``L`` = ITU-R 601-2);
2. ``resize``: one number resizes the short side to it keeping the aspect ratio (torchvision's
   ``Resize(int)``), two numbers resize to exactly H×W; bilinear, as Pillow does it;
3. ``center_crop`` to H×W (torchvision's rounding of the offsets);
4. ``channel_order`` ``bgr`` reverses the channels (OpenCV-trained models);
5. the value mapping, in float32 arithmetic, with ``p`` a 0..255 pixel:
   ``mean``/``std`` (per channel, listed in the model's channel order): ``x = (p / 255 - mean) / std``;
   or ``scale``/``offset``: ``x = p * scale + offset`` (``(p - 127) / 128`` is scale 1/128, offset -127/128);
6. ``layout`` ``nchw`` (C×H×W per image) or ``nhwc`` (H×W×C), then ``dtype`` (integer dtypes round
   and must fit).

With no value mapping given, pixels map to [0, 1] (scale 1/255).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgekit.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

CHANNEL_ORDERS = ("rgb", "bgr")
LAYOUTS = ("nchw", "nhwc")
DTYPES = ("float32", "float16", "uint8", "int8")
RESAMPLE = "bilinear"  # the only filter: written into manifests so apps know it

# Value mappings only: sizes depend on the model, so they come from flags or a YAML file.
PRESETS: dict[str, dict[str, Any]] = {
    "imagenet": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    "minus1-1": {"scale": 1 / 127.5, "offset": -1.0},
    "0-1": {"scale": 1 / 255, "offset": 0.0},
    "raw": {"scale": 1.0, "offset": 0.0},
    "inception": {"scale": 1 / 128, "offset": -127 / 128},  # (p - 127) / 128, EfficientNet-Lite's
}
PRESET_HELP = {
    "imagenet": "(p/255 - ImageNet mean) / ImageNet std",
    "minus1-1": "[-1, 1]: p/127.5 - 1",
    "0-1": "[0, 1]: p/255",
    "raw": "0..255 as is",
    "inception": "(p - 127)/128, as EfficientNet-Lite",
}
_MANIFEST_INFO_KEYS = ("formula", "resample")  # written for people and apps, ignored on reading


def _fail(message: str, hint: str) -> DataError:
    return DataError(message, hint)


@dataclass(frozen=True)
class Preprocess:
    """A validated preprocessing spec; see the module docstring for the order of the steps.

    Bad values raise :class:`~edgekit.errors.DataError`. ``preset`` only records the name the
    value mapping came from, for reports.
    """

    resize: int | tuple[int, int] | None = None
    center_crop: tuple[int, int] | None = None
    grayscale: bool = False
    channel_order: str = "rgb"
    layout: str = "nchw"
    dtype: str = "float32"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float | None = None
    offset: float | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        set_("resize", _check_resize(self.resize))
        set_("center_crop", _check_size("center_crop", self.center_crop))
        if not isinstance(self.grayscale, bool):
            raise _fail(f"preprocess grayscale must be true or false (got {self.grayscale!r})",
                        "use --grayscale (YAML: grayscale: true)")
        set_("channel_order", _check_choice("channel_order", self.channel_order, CHANNEL_ORDERS))
        set_("layout", _check_choice("layout", self.layout, LAYOUTS))
        set_("dtype", _check_choice("dtype", self.dtype, DTYPES))
        self._check_mapping(set_)

    def _check_mapping(self, set_: Any) -> None:
        has_mean_std = self.mean is not None or self.std is not None
        has_scale = self.scale is not None or self.offset is not None
        if has_mean_std and has_scale:
            raise _fail("preprocess has both mean/std and scale/offset",
                        "give one value mapping: --mean/--std (on [0,1] pixels) or --scale/--offset (on 0..255)")
        if has_mean_std:
            if self.mean is None or self.std is None:
                missing = "std" if self.std is None else "mean"
                raise _fail(f"preprocess mean and std go together: {missing} is missing",
                            f"give --{missing} (YAML: {missing}) too")
            set_("mean", _check_channels("mean", self.mean, self.grayscale))
            set_("std", _check_channels("std", self.std, self.grayscale))
            if any(s <= 0 for s in self.std):
                raise _fail(f"preprocess std must be positive (got {_fmt_list(self.std)})",
                            "give the training std, e.g. --std 0.229,0.224,0.225")
            return
        if self.scale is None and self.offset is not None:
            raise _fail("preprocess offset needs a scale", "give --scale too, e.g. --scale 1/128 --offset -127/128")
        scale = 1 / 255 if self.scale is None else _check_number("scale", self.scale)
        offset = 0.0 if self.offset is None else _check_number("offset", self.offset)
        if scale == 0:
            raise _fail("preprocess scale must not be 0", "e.g. --scale 1/255 maps pixels to [0, 1]")
        set_("scale", scale)
        set_("offset", offset)

    # --- construction --------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str) -> "Preprocess":
        """A named value mapping: imagenet, minus1-1, 0-1, raw or inception."""
        if name not in PRESETS:
            raise _fail(f"unknown preprocess preset {name!r}",
                        f"use one of {', '.join(PRESETS)} or a YAML file")
        return cls(preset=name, **PRESETS[name])

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Preprocess":
        """Read a spec from YAML: the field names as keys, optionally ``preset:`` for the value mapping."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise _fail(f"preprocess file not found: {path}", "pass a YAML file or a preset name")
        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise _fail(f"cannot read {path} as YAML: {' '.join(str(exc).split())}", "fix the YAML syntax") from None
        if isinstance(data, dict) and set(data) == {"preprocess"}:
            data = data["preprocess"]  # a section copied out of a larger config
        if not isinstance(data, dict):
            raise _fail(f"{path} is not a YAML mapping", "write keys such as resize: 224, preset: imagenet")
        return cls._from_values({str(k).replace("-", "_"): v for k, v in data.items()},
                                label=lambda field: f"{path}: {field}")

    @classmethod
    def from_options(cls, preset: str | None = None, *, resize: Any = None, center_crop: Any = None,
                     grayscale: bool | None = None, channel_order: str | None = None, layout: str | None = None,
                     dtype: str | None = None, mean: Any = None, std: Any = None, scale: Any = None,
                     offset: Any = None) -> "Preprocess | None":
        """Build a spec from CLI flag values (strings such as ``"224"``, ``"0.5,0.5,0.5"``, ``"1/128"``).

        ``preset`` is a preset name or a YAML file; the other flags override it (a value mapping
        given by flags replaces the preset's). None when no flag is given.
        """
        flags = {"resize": resize, "center_crop": center_crop, "grayscale": grayscale,
                 "channel_order": channel_order, "layout": layout, "dtype": dtype,
                 "mean": mean, "std": std, "scale": scale, "offset": offset}
        given = {k: v for k, v in flags.items() if v is not None}
        if preset is None and not given:
            return None
        label = lambda field: "--" + field.replace("_", "-")  # noqa: E731
        base = cls() if preset is None else _preset_or_yaml(preset)
        return base._override(cls._parse_values(given, label), label)

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> "Preprocess":
        """The inverse of :meth:`to_manifest`."""
        if not isinstance(data, Mapping):
            raise _fail("manifest preprocess is not a mapping", "re-export the artifact")
        values = {k: v for k, v in data.items() if k not in _MANIFEST_INFO_KEYS}
        return cls._from_values(values, label=lambda field: f"manifest preprocess.{field}", allow_preset_name=True)

    @classmethod
    def _from_values(cls, values: dict[str, Any], label: Any, allow_preset_name: bool = False) -> "Preprocess":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise _fail(f"unknown preprocess key {label(unknown[0])}", f"known keys: {', '.join(sorted(known))}")
        values = dict(values)
        preset = values.pop("preset", None)
        if preset is not None and not isinstance(preset, str):
            raise _fail(f"{label('preset')} must be a name", f"use one of {', '.join(PRESETS)}")
        parsed = cls._parse_values({k: v for k, v in values.items() if v is not None}, label)
        if allow_preset_name:  # a manifest carries the full mapping; the name is only a record
            return cls(preset=preset, **parsed)
        base = cls() if preset is None else cls.from_preset(preset)
        return base._override(parsed, label)

    @staticmethod
    def _parse_values(values: dict[str, Any], label: Any) -> dict[str, Any]:
        parsers = {"resize": _parse_ints, "center_crop": _parse_ints, "mean": _parse_floats, "std": _parse_floats,
                   "scale": _parse_number, "offset": _parse_number, "grayscale": _parse_bool}
        return {k: parsers.get(k, _parse_text)(label(k), v) for k, v in values.items()}

    def _override(self, values: dict[str, Any], label: Any) -> "Preprocess":
        """A copy with ``values`` replacing fields; a new value mapping drops the old one."""
        changes = dict(values)
        if {"mean", "std"} & set(values):
            changes.update(scale=None, offset=None, preset=None)
            changes.setdefault("mean", self.mean)
            changes.setdefault("std", self.std)
        elif {"scale", "offset"} & set(values):
            changes.update(mean=None, std=None, preset=None)
            changes.setdefault("scale", self.scale)
            changes.setdefault("offset", 0.0 if "scale" in values else self.offset)
        return replace(self, **changes)

    # --- output --------------------------------------------------------------------------

    @property
    def uses_mean_std(self) -> bool:
        return self.mean is not None

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def formula(self) -> str:
        """The value mapping in words, e.g. ``x = (p / 255 - mean) / std``."""
        if self.uses_mean_std:
            return f"x = (p / 255 - {_fmt_list(self.mean)}) / {_fmt_list(self.std)}"
        return f"x = p * {_fmt(self.scale)} + {_fmt(self.offset)}"

    def describe(self) -> str:
        """One line for reports: ``grayscale · resize 28 · x = (p / 255 - 0.286) / 0.353 · NCHW float32``."""
        parts = ["grayscale" if self.grayscale else self.channel_order.upper()]
        if self.resize is not None:
            parts.append(f"resize {_fmt_size(self.resize)}")
        if self.center_crop is not None:
            parts.append(f"center-crop {_fmt_size(self.center_crop)}")
        mapping = self.formula()
        parts.append(f"{mapping} ({self.preset})" if self.preset else mapping)
        parts.append(f"{self.layout.upper()} {self.dtype}")
        return " · ".join(parts)

    def to_manifest(self) -> dict[str, Any]:
        """A plain JSON dict; only the active value mapping is written."""
        data = asdict(self)
        for key in ("resize", "center_crop", "mean", "std"):
            if isinstance(data[key], tuple):
                data[key] = list(data[key])
        for key in (("scale", "offset") if self.uses_mean_std else ("mean", "std")):
            del data[key]
        data["formula"] = self.formula()
        data["resample"] = RESAMPLE
        return data

    # --- applying ------------------------------------------------------------------------

    def apply(self, image: "Image.Image") -> np.ndarray:
        """One Pillow image to one model input (no batch dimension): C×H×W or H×W×C."""
        from PIL import Image

        if image.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
            raise _fail(f"image mode {image.mode} (16-bit or float pixels) is not supported",
                        "save the images as 8-bit PNG or JPEG")
        image = image.convert("L" if self.grayscale else "RGB")
        image = self._resized(image, Image.Resampling.BILINEAR)
        image = self._cropped(image)
        pixels = np.asarray(image, dtype=np.uint8)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if self.channel_order == "bgr":
            pixels = pixels[:, :, ::-1]
        values = self.map_values(pixels)
        if self.layout == "nchw":
            values = values.transpose(2, 0, 1)
        return self._cast(np.ascontiguousarray(values))

    def map_values(self, pixels: np.ndarray) -> np.ndarray:
        """The value mapping on 0..255 pixels (channels last), in float32."""
        p = pixels.astype(np.float32)
        if self.uses_mean_std:
            # the same operations, in the same order, as edgekit.data.normalize: bit-identical results
            return (p / np.float32(255.0) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return p * np.float32(self.scale) + np.float32(self.offset)

    def _resized(self, image: "Image.Image", resample: Any) -> "Image.Image":
        if self.resize is None:
            return image
        w, h = image.size
        if isinstance(self.resize, int):
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(self.resize * long / short)
            size = (self.resize, new_long) if w <= h else (new_long, self.resize)
        else:
            size = (self.resize[1], self.resize[0])
        return image if size == (w, h) else image.resize(size, resample)

    def _cropped(self, image: "Image.Image") -> "Image.Image":
        if self.center_crop is None:
            return image
        ch, cw = self.center_crop
        w, h = image.size
        if ch > h or cw > w:
            raise _fail(f"image is {h}×{w} after resizing, smaller than center_crop {ch}×{cw}",
                        "resize to at least the crop size first (--resize)")
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        return image.crop((left, top, left + cw, top + ch))

    def _cast(self, values: np.ndarray) -> np.ndarray:
        if self.dtype in ("float32", "float16"):
            return values.astype(self.dtype)
        info = np.iinfo(self.dtype)
        rounded = np.rint(values)
        if rounded.min() < info.min or rounded.max() > info.max:
            raise _fail(f"preprocessed values {rounded.min():g}..{rounded.max():g} do not fit dtype {self.dtype}",
                        "choose a value mapping within the dtype's range (e.g. preset raw for uint8)")
        return rounded.astype(self.dtype)


# --- validation and parsing helpers -----------------------------------------------------------


def _preset_or_yaml(value: str) -> Preprocess:
    if value in PRESETS:
        return Preprocess.from_preset(value)
    if value.endswith((".yaml", ".yml")) or Path(value).is_file():
        return Preprocess.from_yaml(value)
    raise _fail(f"unknown preprocess preset {value!r}", f"use one of {', '.join(PRESETS)} or a YAML file")


def _check_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).lower()
    if text not in choices:
        raise _fail(f"preprocess {field} {value!r} is not one of {', '.join(choices)}",
                    f"set --{field.replace('_', '-')} (YAML: {field}) to {' or '.join(choices)}")
    return text


def _check_resize(value: Any) -> int | tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise _fail(f"preprocess resize must be positive (got {value})", "e.g. --resize 256 or --resize 224,224")
        return value
    return _check_size("resize", value)


def _check_size(field: str, value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise _fail(f"preprocess {field} must be one size or H,W of positive integers (got {value!r})",
                    f"e.g. --{field.replace('_', '-')} 224 or 224,224")
    return (int(value[0]), int(value[1]))


def _check_number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(f"preprocess {field} must be a finite number (got {value!r})", f"e.g. --{field} 1/128")
    return float(value)


def _check_channels(field: str, value: Any, grayscale: bool) -> tuple[float, ...]:
    values = (value,) if isinstance(value, (int, float)) else value
    if not isinstance(values, (list, tuple)) or not values:
        raise _fail(f"preprocess {field} must be numbers (got {value!r})", f"e.g. --{field} 0.5 or 0.5,0.5,0.5")
    values = tuple(_check_number(field, v) for v in values)
    allowed = (1,) if grayscale else (1, 3)
    if len(values) not in allowed:
        channels = "1 channel (grayscale)" if grayscale else "3 channels"
        raise _fail(f"preprocess {field} has {len(values)} values but the images have {channels}",
                    f"give {' or '.join(map(str, allowed))} value(s) for --{field}")
    return values


def _parse_number(label: str, value: Any) -> float:
    """A number, or a string such as ``0.5``, ``1/128`` or ``-127/128``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        if "/" in text:
            num, den = text.split("/")
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise _fail(f"{label}: {value!r} is not a number", "write e.g. 0.5, 1/128 or -127/128") from None


def _parse_floats(label: str, value: Any) -> tuple[float, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    return tuple(_parse_number(label, v) for v in items)


def _parse_ints(label: str, value: Any) -> int | tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    items = value if isinstance(value, (list, tuple)) else str(value).lower().replace("x", ",").split(",")
    out = []
    for item in items:
        try:
            number = int(str(item).strip())
        except ValueError:
            raise _fail(f"{label}: {value!r} is not a size", "write e.g. 224 or 224,224") from None
        out.append(number)
    return out[0] if len(out) == 1 else tuple(out)


def _parse_bool(label: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise _fail(f"{label}: {value!r} is not true or false", "write true or false")


def _parse_text(label: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(f"{label}: {value!r} is not a name", "see the allowed values in the docs")
    return value


def _fmt(value: float | None) -> str:
    return f"{value:.6g}"


def _fmt_list(values: tuple[float, ...] | None) -> str:
    values = values or ()
    return _fmt(values[0]) if len(values) == 1 else "(" + ", ".join(_fmt(v) for v in values) + ")"


def _fmt_size(size: int | tuple[int, int]) -> str:
    return str(size) if isinstance(size, int) else f"{size[0]}×{size[1]}"
