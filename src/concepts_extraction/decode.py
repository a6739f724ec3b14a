"""Decoding and validation of image files with Pillow.

Every file ends in an RGB array or an `ImageRejected` error whose message states
what was found and what to do, so one bad file never stops a chunk. The rules
for each kind of file are listed in docs/inputs.md.
"""

import errno
import math
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np
from PIL import Image, ImageOps

# Only these decoders are used: the content decides, not the file's extension.
# MPO is the multi-picture JPEG that many cameras write; its first picture is read.
FORMATS = ("JPEG", "MPO", "PNG")

# Pillow's own decompression bomb limit is replaced by the `max_pixels` argument,
# which is checked on the header, before any pixel is decoded.
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

# A PNG `tRNS` chunk makes one value of these modes transparent: it adds an
# alpha channel that the mode's name does not show.
_KEYED_TRANSPARENCY = {
    "P": (4, "palette with transparency"),
    "RGB": (4, "RGB with a transparent colour"),
    "1": (2, "1-bit with a transparent value"),
    "L": (2, "grayscale with a transparent value"),
    "I;16": (2, "16-bit grayscale with a transparent value"),
    "I;16B": (2, "16-bit grayscale with a transparent value"),
    "I": (2, "32-bit grayscale with a transparent value"),
}

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I")

_FILE_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}

_REPLACE = "Replace it with an intact copy from its source."

_JPEG_SIGNATURE = b"\xff\xd8\xff"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
    """Returns the number of colour channels of an image and a name for its mode.

    A transparent colour or palette index (a PNG `tRNS` chunk) counts as an
    alpha channel.
    """
    mode = image.mode
    if "transparency" in image.info and mode in _KEYED_TRANSPARENCY:
        channels, name = _KEYED_TRANSPARENCY[mode]
    else:
        channels, name = _MODE_CHANNELS.get(mode, (len(image.getbands()), mode))
    return channels, name if name == mode else f"{name}, {mode}"


def _channel_reason(channels: int, name: str) -> str:
    hint = "Set non_rgb: convert (--non-rgb convert) to convert it to RGB"
    if channels == 3:
        return f"3 channels in another colour space ({name}), expected RGB. {hint}"
    noun = "channel" if channels == 1 else "channels"
    return f"{channels} {noun} ({name}), expected 3. {hint}"


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
            "not the file extension). Convert it to JPEG or PNG to classify it"
        )
    if image.format == "PNG" and getattr(image, "n_frames", 1) > 1:
        raise ImageRejected(
            f"animated PNG with {image.n_frames} frames, expected a still image. "
            "Save the frame to classify as a still PNG or JPEG"
        )

    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(
            f"{width}x{height} pixels is more than max_pixels ({max_pixels}), so "
            "it was not decoded; raise max_pixels in the config if the image is "
            "genuine"
        )
    if width == 0 or height == 0:
        raise ImageRejected(f"empty image of {width}x{height} pixels")

    channels, name = describe_mode(image)
    is_rgb = channels == 3 and image.mode in ("RGB", "P")
    if not is_rgb and non_rgb != "convert":
        raise ImageRejected(_channel_reason(channels, name))
    return ImageInfo(image.format, image.mode, width, height, not is_rgb)


def _open_error(path: str | os.PathLike, error: OSError) -> ImageRejected:
    """Turns the operating system's refusal to open a file into a reason."""
    if error.errno == errno.ENOENT:
        if os.path.islink(path):
            return ImageRejected(
                "broken symbolic link: its target does not exist. Fix or delete "
                "the link"
            )
        return ImageRejected(
            "file not found: it was moved or deleted after the folder was "
            "searched. Run again to pick up the current files"
        )
    if error.errno == errno.ELOOP:
        return ImageRejected(
            "symbolic link loop: the link points back to itself through other "
            "links. Fix or delete the link"
        )
    if error.errno == errno.ENXIO:
        return ImageRejected(
            "a socket, not a regular file: it contains no image. Move it out of the "
            "input folder"
        )
    return ImageRejected(
        f"cannot be read: {error.strerror or error}. Check the file's permissions"
    )


@contextmanager
def _opened_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Opens a regular, non-empty file for reading, or rejects it.

    The file is opened without blocking and checked through its descriptor, so
    a named pipe or a device that carries an image's name never hangs the run,
    and a file swapped after the check cannot slip through.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise _open_error(path, error) from None

    try:
        _check_file(os.fstat(descriptor))
    except BaseException:
        os.close(descriptor)
        raise
    with os.fdopen(descriptor, "rb") as handle:
        yield handle


def _check_file(status: os.stat_result) -> None:
    """Rejects a file that is not regular (a pipe, a device) or that is empty."""
    if not stat.S_ISREG(status.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(status.st_mode), "a special file")
        raise ImageRejected(
            f"{kind}, not a regular file: it contains no image. Move it out of the "
            "input folder"
        )
    if status.st_size == 0:
        raise ImageRejected(
            "empty file (0 bytes): it contains no image. Copy it again from its "
            "source or delete it"
        )


@contextmanager
def _open(path: str | os.PathLike) -> Iterator[Image.Image]:
    """Opens an image with Pillow, reading its header only, or rejects the file.

    Any error that Pillow raises on the file's bytes becomes a rejection:
    damaged files make Pillow raise many kinds of exceptions, and none of them
    must stop the other files of a chunk.
    """
    with _opened_file(path) as handle:
        try:
            image = Image.open(handle)
        except Image.UnidentifiedImageError:
            raise _unidentified(handle) from None
        except Exception as error:
            raise ImageRejected(
                f"damaged image header ({_error_text(error)}). {_REPLACE}"
            ) from None
        with image:
            yield image


def _unidentified(handle: BinaryIO) -> ImageRejected:
    """Returns the reason for a file in which Pillow recognises no format.

    A file that starts with the JPEG or PNG signature has a damaged header. Any
    other file is not an image at all.
    """
    handle.seek(0)
    start = handle.read(len(_PNG_SIGNATURE))
    for signature, format in ((_JPEG_SIGNATURE, "JPEG"), (_PNG_SIGNATURE, "PNG")):
        if start.startswith(signature):
            return ImageRejected(
                f"damaged {format} header: the file starts like a {format} but "
                f"Pillow cannot read its header. {_REPLACE}"
            )
    return ImageRejected(
        "not an image: Pillow recognises no image format in its bytes. The file "
        "is damaged or is not a picture; replace or delete it"
    )


def _error_text(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _decoding_error(error: Exception) -> ImageRejected:
    """Turns an error raised while decoding pixels into a reason."""
    text = _error_text(error)
    if isinstance(error, MemoryError):
        return ImageRejected(
            "not enough memory to decode it. Lower max_pixels or give the "
            "classify jobs more memory (classify: mem_mb)"
        )
    if "truncated" in text.lower():
        return ImageRejected(
            f"truncated file: the image data ends early ({text}). The file is "
            "incomplete: copy it again from its source"
        )
    return ImageRejected(f"damaged image data: decoding failed ({text}). {_REPLACE}")


def _check(image: Image.Image, non_rgb: str, max_pixels: int) -> ImageInfo:
    """Runs `check_image`, turning errors from damaged headers into rejections."""
    try:
        return check_image(image, non_rgb, max_pixels)
    except ImageRejected:
        raise
    except Exception as error:
        raise ImageRejected(
            f"damaged image header ({_error_text(error)}). {_REPLACE}"
        ) from None


def inspect_image(
    path: str | os.PathLike,
    non_rgb: str = "reject",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageInfo:
    """Reads an image's header and checks it with `check_image`.

    No pixel is decoded, so this is fast whatever the image's size.

    Raises:
        ImageRejected: with the reason, if the image cannot be classified.
    """
    with _open(path) as image:
        return _check(image, non_rgb, max_pixels)


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scales 16-bit grayscale to 8 bits (65535 becomes 255), then to RGB."""
    values = np.asarray(image).astype(np.float64)
    eight_bit = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    gray = Image.fromarray(eight_bit, mode="L")
    key = image.info.get("transparency")
    if not isinstance(key, int):
        return gray.convert("RGB")
    alpha = np.where(values == key, 0, 255).astype(np.uint8)
    transparent = Image.merge("LA", (gray, Image.fromarray(alpha, mode="L")))
    return _on_white(transparent)


def _on_white(image: Image.Image) -> Image.Image:
    """Composites an image with transparency on a white background."""
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Converts any supported mode to RGB, compositing transparency on white.

    CMYK is converted with Pillow's formula for Adobe-inverted CMYK JPEGs, the
    kind Photoshop writes. Embedded ICC colour profiles are not applied.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    has_alpha = image.mode in ("LA", "PA", "RGBA") or "transparency" in image.info
    if has_alpha:
        return _on_white(image)
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _central_box(width: int, height: int, fraction: float) -> tuple[int, ...]:
    # Whole pixels, as in tf.image.central_crop, so that resizing never blends in
    # pixels from outside the crop.
    left = int((width - width * fraction) / 2)
    top = int((height - height * fraction) / 2)
    return (left, top, width - left, height - top)


def _decode(
    image: Image.Image, size: int, central_fraction: float, draft: bool
) -> np.ndarray:
    """Decodes the pixels of a checked image into the network's input array."""
    if draft and image.format in ("JPEG", "MPO"):
        # Twice the side that the crop needs, so Pillow reduces only images
        # with both sides of at least 1024 pixels. On the 100 of 253 real photos
        # that it reduced, the top-1 class always matched full decoding.
        side = 2 * math.ceil(size / central_fraction)
        image.draft(image.mode, (side, side))
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    image = _to_rgb(image)
    box = _central_box(image.width, image.height, central_fraction)
    cropped = image.crop(box)
    resized = cropped.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def load_image(
    path: str | os.PathLike,
    size: int = 224,
    central_fraction: float = 0.875,
    non_rgb: str = "reject",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: bool = True,
) -> tuple[np.ndarray, ImageInfo]:
    """Decodes an image into the network's input: a central crop resized to a square.

    The header is checked first (`check_image`), so an image that is rejected
    is never decoded. The EXIF orientation is applied before the crop. JPEGs
    are decoded at a reduced scale in the DCT domain (Pillow's draft mode) as
    long as both sides stay at least twice the side that the crop needs (512
    pixels for the defaults), which is most of the cost saved on camera
    photos. A file whose data ends early is rejected, never padded.

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
        info = _check(image, non_rgb, max_pixels)
        try:
            return _decode(image, size, central_fraction, draft), info
        except Exception as error:
            raise _decoding_error(error) from None
