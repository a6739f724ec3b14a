"""Property-based test: no byte string makes decoding raise or hang.

Hypothesis mutates the bytes of real small JPEG and PNG files (and of a few
other formats) by truncating them, flipping bits, inserting, deleting and
overwriting bytes, and also draws plain random bytes. Every input must end in
a result or an `ImageRejected`, never in another exception.
"""

from __future__ import annotations

import faulthandler
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

import odd_files
from concepts_extraction.decode import (
    ImageInfo,
    ImageRejected,
    inspect_image,
    load_image,
)

# The largest canvas decoded here. A bit flip in a JPEG's frame header can
# request a large image that is still under the default max_pixels, and
# decoding it would take seconds. test_inputs.py tests the default limit.
MAX_PIXELS = 1_000_000

# A watchdog: if one input hangs the decoder, the process prints every
# thread's stack and exits instead of waiting forever.
HANG_TIMEOUT_S = 300


def _seeds() -> list[bytes]:
    rgb = odd_files.picture(seed=1, side=32).resize((32, 24))
    exif = Image.Exif()
    exif[odd_files.ORIENTATION_TAG] = 6
    encode = odd_files.encode
    seeds = [
        encode(rgb, "JPEG", quality=80),
        encode(rgb, "JPEG", progressive=True),
        encode(rgb, "JPEG", exif=exif),
        encode(rgb, "JPEG", subsampling=0, optimize=True),
        encode(rgb.convert("CMYK"), "JPEG"),
        encode(rgb.convert("L"), "JPEG"),
        encode(rgb, "MPO", save_all=True, append_images=[rgb.rotate(90)]),
        encode(rgb, "PNG"),
        encode(rgb, "PNG", exif=exif),
        encode(rgb.convert("RGBA"), "PNG"),
        encode(rgb.convert("LA"), "PNG"),
        encode(rgb.convert("1"), "PNG"),
        encode(rgb.convert("P"), "PNG", transparency=3),
        encode(rgb, "PNG", transparency=(0, 0, 0)),
        encode(rgb, "PNG", save_all=True, append_images=[rgb.rotate(90)]),
        odd_files.gray16_png(0x1234),
        odd_files.cmyk_jpeg((255, 0, 0, 0)),
        odd_files.oriented_jpeg(8),
        encode(rgb, "GIF"),
        encode(rgb, "WEBP"),
        encode(rgb, "BMP"),
    ]
    return seeds


SEEDS = _seeds()


@st.composite
def mutated(draw) -> bytes:
    """Draws a seed file's bytes with one to five mutations applied in turn."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "set"]))
        last = max(len(data) - 1, 0)
        # About a third of the mutations hit the first 64 bytes, where the headers are.
        anywhere = st.integers(0, last)
        position = draw(st.integers(0, min(last, 63)) | anywhere | anywhere)
        if kind == "truncate":
            del data[position:]
        elif kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 64))]
        elif kind == "set" and data:
            data[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
    return bytes(data)


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    """The file that each example is written to."""
    return tmp_path_factory.mktemp("fuzz") / "image.jpg"


@pytest.fixture(scope="module")
def watchdog():
    """Stops the process with every thread's stack if the module hangs."""
    faulthandler.dump_traceback_later(HANG_TIMEOUT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _outcome(function, *args, **options):
    try:
        return function(*args, **options)
    except ImageRejected as rejected:
        return rejected


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(
    max_examples=5000,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    # About one input in four is plain random bytes.
    data=st.one_of(mutated(), mutated(), mutated(), st.binary(max_size=512)),
    non_rgb=st.sampled_from(["reject", "convert"]),
)
def test_fuzz_decode(target, watchdog, data, non_rgb):
    target.write_bytes(data)
    options = {"non_rgb": non_rgb, "max_pixels": MAX_PIXELS}
    header = _outcome(inspect_image, target, **options)
    decoded = _outcome(load_image, target, **options)

    # --hypothesis-show-statistics counts the outcomes by these labels.
    if isinstance(decoded, tuple):
        event("decoded")
    else:
        event(" ".join(str(decoded).split()[:3]))

    assert isinstance(header, (ImageInfo, ImageRejected))
    assert isinstance(decoded, (tuple, ImageRejected))
    if isinstance(header, ImageRejected):
        # load_image checks the same header first, so it must reject too.
        assert isinstance(decoded, ImageRejected)
    if isinstance(decoded, tuple):
        pixels, info = decoded
        assert pixels.shape == (224, 224, 3)
        assert pixels.dtype == np.uint8
        assert info == header
