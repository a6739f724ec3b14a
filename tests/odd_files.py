"""Odd and broken input files, made with Pillow, and the outcome expected for each.

`build_tree` writes a folder tree with one file per case and returns, for each
entry that discovery lists, what the run must report: classified, rejected with
a reason containing some words, or skipped with an exact reason. The outcomes
follow the policy in docs/inputs.md.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 64

CLASSIFIED = "classified"
REJECTED = "rejected"
SKIPPED = "skipped"

ORIENTATION_TAG = 0x0112

# Names that a shell would expand or split. If any reached a shell, it would
# create one of these files.
SHELL_MARKERS = ("pwned_dollar", "pwned_backtick", "pwned_semicolon")

# Names that are not valid UTF-8: Latin-1 "é" in a good image, and a lone 0xFF
# byte in an empty file, which is rejected.
LATIN1_NAME = b"latin-1 caf\xe9.jpg"
BROKEN_BYTES_NAME = b"empty \xff.jpg"

DEEP_FOLDER = "/".join(f"level{depth:02d}" for depth in range(1, 11))


@dataclass(frozen=True)
class Expected:
    """What a run must report for one entry of the tree.

    `reject` and `convert` are the outcomes with `non_rgb: reject` and
    `non_rgb: convert`. `words` must appear in a rejection reason, and are the
    exact reason of a skipped entry. `mode` is the original colour mode that the
    "converted" map records when the image is converted.
    """

    path: str
    reject: str
    convert: str
    words: str = ""
    mode: str | None = None


def encode(image: Image.Image, format: str, **options) -> bytes:
    """Returns the bytes of `image` saved in `format`."""
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def picture(seed: int, side: int = SIDE) -> Image.Image:
    """Returns a small RGB picture, different for each seed: a gradient with noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, side)
    pixels = np.stack(
        [
            np.add.outer(ramp, ramp) / 2,
            np.tile(ramp, (side, 1)),
            rng.uniform(0, 255, (side, side)),
        ],
        axis=-1,
    )
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def halves(left: tuple, right: tuple, side: int = SIDE) -> Image.Image:
    """Returns an RGB square whose left half is `left` and right half is `right`."""
    image = Image.new("RGB", (side, side), left)
    image.paste(right, (side // 2, 0, side, side))
    return image


def cmyk_jpeg(colour: tuple[int, int, int, int]) -> bytes:
    """Returns a CMYK JPEG of one colour, written the way Photoshop writes them.

    libjpeg adds an Adobe APP14 marker to CMYK JPEGs and Pillow stores the ink
    values inverted, which is Adobe's convention.
    """
    return encode(Image.new("CMYK", (SIDE, SIDE), colour), "JPEG", quality=95)


def gray16_png(value: int) -> bytes:
    """Returns a 16-bit grayscale PNG of one value (0 to 65535)."""
    pixels = np.full((SIDE, SIDE), value, dtype=np.uint16)
    return encode(Image.fromarray(pixels), "PNG")


def transparent_palette_png() -> bytes:
    """Returns a palette PNG: index 0 is transparent black, index 1 opaque red.

    The left half uses index 0 and the right half index 1.
    """
    image = Image.new("P", (SIDE, SIDE), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.paste(1, (SIDE // 2, 0, SIDE, SIDE))
    return encode(image, "PNG", transparency=0)


def oriented_jpeg(orientation: int) -> bytes:
    """Returns a left-red, right-blue JPEG whose EXIF Orientation is `orientation`.

    With Orientation 6, viewers rotate the stored pixels 90 degrees clockwise.
    """
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    image = halves((255, 0, 0), (0, 0, 255))
    return encode(image, "JPEG", quality=95, exif=exif)


def truncated_jpeg(fraction: float = 0.6) -> bytes:
    """Returns the first `fraction` of the bytes of a 256x256 JPEG."""
    data = encode(picture(seed=7, side=256), "JPEG", quality=90)
    return data[: int(len(data) * fraction)]


def animated(format: str) -> bytes:
    """Returns a two-frame animation (APNG for "PNG", GIF for "GIF")."""
    first, second = Image.new("RGB", (SIDE, SIDE), "red"), picture(seed=3)
    return encode(first, format, save_all=True, append_images=[second])


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    checksum = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def bomb_png(width: int = 20_000, height: int = 10_000) -> bytes:
    """Returns a valid palette PNG of `width` x `height` black pixels.

    The file is about 200 kB, but decoding it would take width x height bytes of
    memory (200 MB for the default size).
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    compressor = zlib.compressobj(9)
    rows = b"\x00" * (width + 1) * 500
    data = [compressor.compress(rows) for _ in range(height // 500)]
    data.append(compressor.flush())
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"PLTE", bytes(3)),
            _png_chunk(b"IDAT", b"".join(data)),
            _png_chunk(b"IEND", b""),
        ]
    )


def random_bytes(count: int = 4096, seed: int = 0) -> bytes:
    """Returns `count` random bytes that are no image format."""
    return np.random.default_rng(seed).bytes(count)


# The AppleDouble header that macOS writes in `._name` files on foreign disks.
APPLEDOUBLE_BYTES = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)
DS_STORE_BYTES = b"\x00\x00\x00\x01Bud1" + bytes(64)


def colour_cases() -> dict[str, tuple[bytes, str, str]]:
    """Returns the colour-mode files: name to (bytes, reason words, Pillow mode)."""
    rgba = Image.new("RGBA", (SIDE, SIDE), (255, 0, 0, 0))
    rgba.paste((255, 0, 0, 128), (SIDE // 2, 0, SIDE, SIDE))
    gray_alpha = Image.new("LA", (SIDE, SIDE), (0, 0))
    bilevel = Image.new("1", (SIDE, SIDE), 0)
    bilevel.paste(1, (SIDE // 2, 0, SIDE, SIDE))
    return {
        "cmyk.jpg": (cmyk_jpeg((255, 0, 0, 0)), "4 channels (CMYK)", "CMYK"),
        "gray.jpg": (
            encode(Image.new("L", (SIDE, SIDE), 100), "JPEG"),
            "1 channel (grayscale, L)",
            "L",
        ),
        "rgba.png": (encode(rgba, "PNG"), "4 channels (RGBA)", "RGBA"),
        "gray_alpha.png": (
            encode(gray_alpha, "PNG"),
            "2 channels (grayscale with alpha, LA)",
            "LA",
        ),
        "palette_transparent.png": (
            transparent_palette_png(),
            "4 channels (palette with transparency, P)",
            "P",
        ),
        "gray16.png": (
            gray16_png(0x8080),
            "1 channel (16-bit grayscale, I;16)",
            "I;16",
        ),
        "bilevel.png": (encode(bilevel, "PNG"), "1 channel (1-bit, 1)", "1"),
    }


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_tree(root: Path, photos: Path) -> list[Expected]:
    """Writes every case under `root` and returns the expected outcome of each.

    Images are in three folders (the top, `names/` and a folder ten levels
    deep), which keeps a workflow run to three classify jobs. `photos` is the
    folder of example photos: two of them become `names/x.jpg` and the deep
    `x.jpg`, so the two files of the same name have different content.
    """
    expected: list[Expected] = []

    def add(
        name: str, data: bytes, reject: str, convert: str, words: str = "", mode=None
    ):
        _write(root / name, data)
        expected.append(Expected(name, reject, convert, words, mode))

    for name, (data, words, mode) in colour_cases().items():
        add(name, data, REJECTED, CLASSIFIED, words, mode)

    add("rgb.jpg", encode(picture(seed=1), "JPEG"), CLASSIFIED, CLASSIFIED)
    palette = picture(seed=2).convert("P", palette=Image.Palette.ADAPTIVE)
    add("palette.png", encode(palette, "PNG"), CLASSIFIED, CLASSIFIED)
    add("rotated.jpg", oriented_jpeg(6), CLASSIFIED, CLASSIFIED)
    add("png_content.jpg", encode(picture(seed=4), "PNG"), CLASSIFIED, CLASSIFIED)

    broken = {
        "truncated.jpg": (truncated_jpeg(), "truncated"),
        "random.jpg": (random_bytes(), "not an image"),
        "empty.jpg": (b"", "empty file (0 bytes)"),
        "webp_content.jpg": (encode(picture(seed=5), "WEBP"), "WEBP content"),
        "bmp_content.png": (encode(picture(seed=6), "BMP"), "BMP content"),
        "gif_content.jpg": (encode(picture(seed=8), "GIF"), "GIF content"),
        "animated.png": (animated("PNG"), "animated PNG with 2 frames"),
        "animated_gif.png": (animated("GIF"), "GIF content"),
        "bomb.png": (bomb_png(), "more than max_pixels"),
    }
    for name, (data, words) in broken.items():
        add(name, data, REJECTED, REJECTED, words)

    # Clutter: each entry is skipped with this exact reason, or rejected.
    add(
        "._rgb.jpg",
        APPLEDOUBLE_BYTES,
        SKIPPED,
        SKIPPED,
        "hidden file",
    )
    add(".DS_Store", DS_STORE_BYTES, SKIPPED, SKIPPED, "hidden file")
    add(
        "notes.txt",
        b"not a picture\n",
        SKIPPED,
        SKIPPED,
        "not a .jpg, .jpeg or .png name",
    )
    _write(root / ".hidden" / "inside.jpg", encode(picture(seed=9), "JPEG"))
    expected.append(Expected(".hidden", SKIPPED, SKIPPED, "hidden folder"))
    (root / "empty" / "nested").mkdir(parents=True)
    os.symlink("missing.jpg", root / "dangling.jpg")
    expected.append(
        Expected("dangling.jpg", REJECTED, REJECTED, "broken symbolic link")
    )
    os.symlink("loop.jpg", root / "loop.jpg")
    expected.append(Expected("loop.jpg", REJECTED, REJECTED, "symbolic link loop"))
    os.mkfifo(root / "pipe.jpg")
    expected.append(Expected("pipe.jpg", REJECTED, REJECTED, "named pipe"))
    os.symlink("names", root / "names_link")
    expected.append(
        Expected("names_link", SKIPPED, SKIPPED, "symbolic link to a folder")
    )
    (root / "names").mkdir()
    os.symlink(".", root / "names" / "loop_to_parent")
    expected.append(
        Expected("names/loop_to_parent", SKIPPED, SKIPPED, "symbolic link to a folder")
    )

    odd_names = [
        "with space.jpg",
        "[brackets] {braces} (1).jpg",
        'quote\'s "double".jpg',
        "semi;colon.jpg",
        f"$(touch {SHELL_MARKERS[0]}) $HOME.jpg",
        f"`touch {SHELL_MARKERS[1]}`.jpg",
        f"a; touch {SHELL_MARKERS[2]}; b.jpg",
        "café naïve ñ.jpg",
        "many.dots.in.the.name.jpg",
        "UPPER.JPG",
        "Mixed.JpEg",
        "star * and ? mark.PNG",
        "new\nline and\ttab.jpg",
    ]
    for seed, name in enumerate(odd_names, start=10):
        add(f"names/{name}", encode(picture(seed), "JPEG"), CLASSIFIED, CLASSIFIED)

    latin1 = os.path.join(os.fsencode(root / "names"), LATIN1_NAME)
    with open(latin1, "wb") as handle:
        handle.write(encode(picture(seed=30), "JPEG"))
    path = "names/" + os.fsdecode(LATIN1_NAME)
    expected.append(Expected(path, CLASSIFIED, CLASSIFIED))
    open(os.path.join(os.fsencode(root / "names"), BROKEN_BYTES_NAME), "wb").close()
    path = "names/" + os.fsdecode(BROKEN_BYTES_NAME)
    expected.append(Expected(path, REJECTED, REJECTED, "empty file (0 bytes)"))

    shutil.copyfile(photos / "animals" / "chelsea.jpg", root / "names" / "x.jpg")
    expected.append(Expected("names/x.jpg", CLASSIFIED, CLASSIFIED))
    deep = root / DEEP_FOLDER / "x.jpg"
    deep.parent.mkdir(parents=True)
    shutil.copyfile(photos / "space" / "rocket.jpg", deep)
    expected.append(Expected(f"{DEEP_FOLDER}/x.jpg", CLASSIFIED, CLASSIFIED))
    return expected
