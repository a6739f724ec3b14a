"""Decoding and validation of image files with Pillow.

Every file ends in an RGB array or an `ImageRejected` error whose message says
what was found, so one bad file never stops a chunk.
"""

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

# Only these decoders are used: the content decides, not the file's extension.
# MPO is the multi-picture JPEG that many cameras write; its first picture is read.
FORMATS = ("JPEG", "MPO", "PNG")

# Pillow's own decompression bomb limit is replaced by the `max_pixels` argument.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 178_956_970

_MODE_CHANNELS = {
    "1": (1, "1-bit"),
    "L": (1, "grayscale"),
    "I;16": (1, "16-bit grayscale"),
    "I;16B": (1, "16-bit grayscale"),
    "I": (1, "32-bit grayscale"),
    "F": (1, "floating-point grayscale"),
    "LA": (2, "grayscale with alpha"),
    "P": (3, "palette"),
    "PA": (4, "palette with alpha"),
    "RGB": (3, "RGB"),
    "RGBA": (4, "RGBA"),
    "CMYK": (4, "CMYK"),
    "YCbCr": (3, "YCbCr"),
    "LAB": (3, "LAB"),
}

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I")


class ImageRejected(Exception):
    """An image that cannot be classified. The message is the reason."""


@dataclass(frozen=True)
class ImageInfo:
    """The header facts that decide whether an image is classified."""

    format: str
    mode: str
    width: int
    height: int
    needs_conversion: bool


def describe_mode(image: Image.Image) -> tuple[int, str]:
    """Returns the number of colour channels of an image and a name for its mode."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        return 4, "palette with transparency, P"
    channels, name = _MODE_CHANNELS.get(mode, (len(image.getbands()), mode))
    return channels, name if name == mode else f"{name}, {mode}"


def _channel_reason(channels: int, name: str) -> str:
    noun = "channel" if channels == 1 else "channels"
    return (
        f"{channels} {noun} ({name}), expected 3. Set non_rgb: convert "
        "(--non-rgb convert) to convert it to RGB"
    )


def check_image(image: Image.Image, non_rgb: str, max_pixels: int) -> ImageInfo:
    """Checks an opened image's format, size and colour mode without decoding it.

    Args:
        image: an image from `PIL.Image.open`, not loaded yet.
        non_rgb: "reject" or "convert": what to do with an image that has not
            got 3 colour channels.
        max_pixels: the largest width times height accepted.

    Raises:
        ImageRejected: with the reason, if the image cannot be classified.
    """
    if image.format not in FORMATS:
        raise ImageRejected(
            f"{image.format} content, expected JPEG or PNG (the content decides, "
            "not the file extension)"
        )
    if image.format == "PNG" and getattr(image, "n_frames", 1) > 1:
        raise ImageRejected(
            f"animated PNG with {image.n_frames} frames, expected a still image"
        )

    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(
            f"{width}x{height} pixels is more than max_pixels ({max_pixels}); "
            "raise max_pixels in the config if the image is genuine"
        )
    if width == 0 or height == 0:
        raise ImageRejected(f"empty image of {width}x{height} pixels")

    channels, name = describe_mode(image)
    is_rgb = channels == 3 and image.mode in ("RGB", "P")
    if not is_rgb and non_rgb != "convert":
        raise ImageRejected(_channel_reason(channels, name))
    return ImageInfo(image.format, image.mode, width, height, not is_rgb)


def _open(path: str | os.PathLike) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageRejected("broken symbolic link: its target does not exist")
        raise ImageRejected("file not found: it was deleted after discovery")
    except Image.UnidentifiedImageError:
        if os.path.getsize(path) == 0:
            raise ImageRejected("empty file (0 bytes)")
        raise ImageRejected(
            "not a readable image: Pillow recognises no image format in its bytes"
        )
    except OSError as error:
        raise ImageRejected(f"cannot be read: {error.strerror or error}")


def inspect_image(
    path: str | os.PathLike,
    non_rgb: str = "reject",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageInfo:
    """Reads an image's header and checks it with `check_image`."""
    with _open(path) as image:
        return check_image(image, non_rgb, max_pixels)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Converts any supported mode to RGB, compositing transparency on white."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        eight_bit = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(eight_bit, mode="L").convert("RGB")

    has_alpha = image.mode in ("LA", "PA", "RGBA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _central_box(width: int, height: int, fraction: float) -> tuple[int, ...]:
    # Whole pixels, as in tf.image.central_crop, so that resizing never blends in
    # pixels from outside the crop.
    left = int((width - width * fraction) / 2)
    top = int((height - height * fraction) / 2)
    return (left, top, width - left, height - top)


def load_image(
    path: str | os.PathLike,
    size: int = 224,
    central_fraction: float = 0.875,
    non_rgb: str = "reject",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: bool = True,
) -> tuple[np.ndarray, ImageInfo]:
    """Decodes an image into the network's input: a central crop resized to a square.

    The EXIF orientation is applied first. JPEGs are decoded at a reduced scale
    in the DCT domain (Pillow's draft mode) when the image is at least twice
    as large as needed, which is most of the cost saved on camera photos.

    Args:
        path: the image file.
        size: the side of the square output, in pixels.
        central_fraction: the part of each side kept by the central crop.
        non_rgb: "reject" or "convert", as in `check_image`.
        max_pixels: the largest width times height accepted.
        draft: whether to use reduced-scale JPEG decoding.

    Returns:
        A `(size, size, 3)` uint8 RGB array and the image's header facts.

    Raises:
        ImageRejected: with the reason, if the image cannot be classified.
    """
    with _open(path) as image:
        info = check_image(image, non_rgb, max_pixels)
        try:
            if draft and image.format in ("JPEG", "MPO"):
                side = math.ceil(size / central_fraction)
                image.draft(image.mode, (side, side))
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ImageRejected(f"decoding failed: {e}") from None

        box = _central_box(image.width, image.height, central_fraction)
        cropped = image.crop(box)
        resized = cropped.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8), info
