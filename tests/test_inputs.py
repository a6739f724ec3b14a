"""Odd and broken inputs: each file ends classified, rejected with a reason or skipped.

Each case is a real file made with Pillow (tests/odd_files.py) in a temporary
folder. The expected outcome of each is the policy in docs/inputs.md. The slow
tests run the whole tree through the command and through Snakemake.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from PIL import Image

import odd_files
from concepts_extraction import jsonio
from concepts_extraction.aggregate import folder_result, top_concepts
from concepts_extraction.classify import ChunkResult, classify_files, load_chunk
from concepts_extraction.classify import save_chunk
from concepts_extraction.decode import ImageRejected, inspect_image, load_image
from concepts_extraction.discover import find_images, folder_id, resolve
from concepts_extraction.discover import split_chunks
from concepts_extraction.models import Classifier, Preprocessing, load_classifier
from odd_files import CLASSIFIED, REJECTED, SIDE, SKIPPED

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "example" / "photos"
READERS = {"inspect": inspect_image, "load": load_image}

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def write(folder: Path, name: str, data: bytes) -> Path:
    """Writes `data` to `folder/name` and returns the path."""
    path = folder / name
    path.write_bytes(data)
    return path


def rejection(reader, path: Path, **options) -> str:
    """Returns the reason with which `reader` rejects `path`, failing if it accepts."""
    with pytest.raises(ImageRejected) as raised:
        reader(path, **options)
    return str(raised.value)


def mean_colour(pixels: np.ndarray) -> tuple[float, ...]:
    """Returns the mean RGB colour of an array of pixels."""
    return tuple(pixels.reshape(-1, 3).mean(axis=0).round(1))


# -- colour modes ------------------------------------------------------------

COLOUR_CASES = odd_files.colour_cases()


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", COLOUR_CASES)
def test_reject_names_mode(tmp_path, name, reader):
    data, words, _ = COLOUR_CASES[name]
    reason = rejection(READERS[reader], write(tmp_path, name, data))
    assert words in reason


@pytest.mark.parametrize("name", COLOUR_CASES)
def test_reject_tells_how_to_convert(tmp_path, name):
    data, _, _ = COLOUR_CASES[name]
    reason = rejection(inspect_image, write(tmp_path, name, data))
    assert "non_rgb: convert" in reason


@pytest.mark.parametrize("name", COLOUR_CASES)
def test_convert_records_mode(tmp_path, name):
    data, _, mode = COLOUR_CASES[name]
    _, info = load_image(write(tmp_path, name, data), non_rgb="convert")
    assert (info.mode, info.needs_conversion) == (mode, True)


@pytest.mark.parametrize(
    "cmyk, rgb",
    [
        ((255, 0, 0, 0), (0, 255, 255)),  # pure cyan
        ((0, 255, 0, 0), (255, 0, 255)),  # pure magenta
        ((0, 255, 255, 0), (255, 0, 0)),  # magenta and yellow inks make red
        ((0, 0, 0, 128), (127, 127, 127)),  # half black
    ],
)
def test_convert_cmyk_colour(tmp_path, cmyk, rgb):
    path = write(tmp_path, "cmyk.jpg", odd_files.cmyk_jpeg(cmyk))
    pixels, _ = load_image(path, non_rgb="convert")
    assert np.allclose(mean_colour(pixels), rgb, atol=3)


def test_cmyk_case_is_adobe_inverted():
    # The CMYK cases are the kind of JPEG that Photoshop writes: an Adobe APP14
    # marker, and ink values stored inverted (full cyan stored as 0). Reading
    # the raw values without Pillow's inversion shows the stored bytes.
    with Image.open(io.BytesIO(odd_files.cmyk_jpeg((255, 0, 0, 0)))) as image:
        has_marker = "adobe" in image.info
        image.tile = [image.tile[0]._replace(args=("CMYK", ""))]
        stored = image.getpixel((SIDE // 2, SIDE // 2))
    assert has_marker
    assert stored == (0, 255, 255, 255)


def test_convert_rgba_on_white(tmp_path):
    data, _, _ = COLOUR_CASES["rgba.png"]
    pixels, _ = load_image(write(tmp_path, "rgba.png", data), non_rgb="convert")
    # Left: red with alpha 0. Right: red with alpha 128 of 255.
    left, right = mean_colour(pixels[:, :80]), mean_colour(pixels[:, -80:])
    assert np.allclose([left, right], [WHITE, (255, 127, 127)], atol=1)


def test_convert_gray_alpha_on_white(tmp_path):
    data, _, _ = COLOUR_CASES["gray_alpha.png"]
    pixels, _ = load_image(write(tmp_path, "la.png", data), non_rgb="convert")
    assert mean_colour(pixels) == WHITE


def test_convert_transparent_index_on_white(tmp_path):
    path = write(tmp_path, "palette.png", odd_files.transparent_palette_png())
    pixels, _ = load_image(path, non_rgb="convert")
    left, right = mean_colour(pixels[:, :80]), mean_colour(pixels[:, -80:])
    assert (left, right) == (WHITE, RED)


@pytest.mark.parametrize("value, gray", [(0x8080, 128), (12850, 50), (65535, 255)])
def test_convert_16_bit_scaled(tmp_path, value, gray):
    path = write(tmp_path, "gray16.png", odd_files.gray16_png(value))
    pixels, _ = load_image(path, non_rgb="convert")
    assert mean_colour(pixels) == (gray, gray, gray)


def test_convert_16_bit_transparent_value(tmp_path):
    # The tRNS chunk makes value 0 (the left half) transparent. The right half
    # is 0x8080.
    values = np.zeros((SIDE, SIDE), dtype=np.uint16)
    values[:, SIDE // 2 :] = 0x8080
    image = Image.fromarray(values)
    path = write(tmp_path, "g16.png", odd_files.encode(image, "PNG", transparency=0))
    pixels, _ = load_image(path, non_rgb="convert")
    left, right = mean_colour(pixels[:, :80]), mean_colour(pixels[:, -80:])
    assert (left, right) == (WHITE, (128, 128, 128))


def test_convert_1_bit(tmp_path):
    data, _, _ = COLOUR_CASES["bilevel.png"]
    pixels, _ = load_image(write(tmp_path, "bilevel.png", data), non_rgb="convert")
    left, right = mean_colour(pixels[:, :80]), mean_colour(pixels[:, -80:])
    assert (left, right) == ((0, 0, 0), WHITE)


def test_convert_grayscale_jpeg(tmp_path):
    data, _, _ = COLOUR_CASES["gray.jpg"]
    pixels, _ = load_image(write(tmp_path, "gray.jpg", data), non_rgb="convert")
    assert np.allclose(mean_colour(pixels), (100, 100, 100), atol=2)


def test_convert_keyed_rgb_on_white(tmp_path):
    # An RGB PNG whose tRNS chunk makes pure green transparent.
    image = odd_files.halves((0, 255, 0), RED)
    path = write(
        tmp_path, "keyed.png", odd_files.encode(image, "PNG", transparency=(0, 255, 0))
    )
    pixels, _ = load_image(path, non_rgb="convert")
    left, right = mean_colour(pixels[:, :80]), mean_colour(pixels[:, -80:])
    assert (left, right) == (WHITE, RED)


def test_reject_keyed_rgb(tmp_path):
    image = odd_files.halves((0, 255, 0), RED)
    path = write(
        tmp_path, "keyed.png", odd_files.encode(image, "PNG", transparency=(0, 255, 0))
    )
    assert "4 channels (RGB with a transparent colour" in rejection(inspect_image, path)


def test_opaque_palette_is_rgb(tmp_path):
    palette = odd_files.picture(seed=2).convert("P", palette=Image.Palette.ADAPTIVE)
    _, info = load_image(
        write(tmp_path, "palette.png", odd_files.encode(palette, "PNG"))
    )
    assert (info.mode, info.needs_conversion) == ("P", False)


# -- orientation -------------------------------------------------------------


def red_side(pixels: np.ndarray) -> str:
    """Returns the edge of the array (top, bottom, left, right) that is most red."""
    strips = {
        "top": pixels[:40],
        "bottom": pixels[-40:],
        "left": pixels[:, :40],
        "right": pixels[:, -40:],
    }
    redness = {
        side: float(strip[..., 0].mean() - strip[..., 2].mean())
        for side, strip in strips.items()
    }
    return max(redness, key=redness.get)


@pytest.mark.parametrize(
    "orientation, side",
    [(1, "left"), (3, "right"), (6, "top"), (8, "bottom")],
)
def test_orientation_applied(tmp_path, orientation, side):
    # The stored pixels are red on the left. Orientation 6 turns them 90 degrees
    # clockwise, which puts the red half on top.
    path = write(tmp_path, "rotated.jpg", odd_files.oriented_jpeg(orientation))
    pixels, _ = load_image(path)
    assert red_side(pixels) == side


def test_orientation_non_square(tmp_path):
    # A 2:1 landscape on disk that is a portrait once rotated: red on top and
    # blue at the bottom, whatever the crop and resize do to the proportions.
    image = odd_files.halves(RED, BLUE, side=64).resize((128, 64))
    exif = Image.Exif()
    exif[odd_files.ORIENTATION_TAG] = 6
    path = write(tmp_path, "wide.jpg", odd_files.encode(image, "JPEG", exif=exif))
    pixels, _ = load_image(path, size=64)
    top, bottom = mean_colour(pixels[:24]), mean_colour(pixels[-24:])
    assert np.allclose([top, bottom], [RED, BLUE], atol=8)


# -- broken files ------------------------------------------------------------


@pytest.mark.parametrize("draft", [True, False])
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_truncated_jpeg_rejected(tmp_path, fraction, draft):
    path = write(tmp_path, "cut.jpg", odd_files.truncated_jpeg(fraction))
    reason = rejection(load_image, path, draft=draft)
    assert reason.startswith("truncated file")


def test_truncated_photo_rejected(tmp_path):
    data = (PHOTOS / "animals" / "chelsea.jpg").read_bytes()
    path = write(tmp_path, "cut.jpg", data[: int(len(data) * 0.6)])
    assert rejection(load_image, path).startswith("truncated file")


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("random.jpg", odd_files.random_bytes(), "not an image"),
        ("short.jpg", b"\xff\xd8\xff\xe0\x00", "damaged JPEG header"),
        ("short.png", b"\x89PNG\r\n\x1a\n\x00", "damaged PNG header"),
        ("empty.jpg", b"", "empty file (0 bytes)"),
    ],
)
@pytest.mark.parametrize("reader", READERS)
def test_unreadable_bytes_rejected(tmp_path, reader, name, data, words):
    reason = rejection(READERS[reader], write(tmp_path, name, data))
    assert words in reason


# -- content against extension -----------------------------------------------


def test_png_named_jpg_classified(tmp_path):
    data = odd_files.encode(odd_files.picture(seed=4), "PNG")
    _, info = load_image(write(tmp_path, "png.jpg", data))
    assert info.format == "PNG"


def test_mpo_first_picture_read(tmp_path):
    first = Image.new("RGB", (SIDE, SIDE), RED)
    second = Image.new("RGB", (SIDE, SIDE), BLUE)
    data = odd_files.encode(first, "MPO", save_all=True, append_images=[second])
    pixels, _ = load_image(write(tmp_path, "camera.jpg", data))
    assert np.allclose(mean_colour(pixels), RED, atol=3)


OTHER_FORMATS = {
    "webp.jpg": (
        lambda: odd_files.encode(odd_files.picture(5), "WEBP"),
        "WEBP content",
    ),
    "bmp.png": (lambda: odd_files.encode(odd_files.picture(6), "BMP"), "BMP content"),
    "gif.jpg": (lambda: odd_files.encode(odd_files.picture(8), "GIF"), "GIF content"),
    "tiff.jpg": (
        lambda: odd_files.encode(odd_files.picture(8), "TIFF"),
        "TIFF content",
    ),
    "anim.png": (lambda: odd_files.animated("PNG"), "animated PNG with 2 frames"),
    "anim_gif.png": (lambda: odd_files.animated("GIF"), "GIF content"),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", OTHER_FORMATS)
def test_other_format_rejected(tmp_path, name, reader):
    make, words = OTHER_FORMATS[name]
    assert words in rejection(READERS[reader], write(tmp_path, name, make()))


def test_other_formats_never_stop_batch(tmp_path):
    files = [
        (name, write(tmp_path, name, make()))
        for name, (make, _) in OTHER_FORMATS.items()
    ]
    good = write(tmp_path, "good.jpg", odd_files.encode(odd_files.picture(1), "JPEG"))
    # A network whose logits are all zero: the test is about the batch, not
    # the classes.
    classifier = Classifier(
        "zeros", lambda images: np.zeros((len(images), 1000)), Preprocessing()
    )
    result = classify_files(files + [("good.jpg", good)], classifier, batch_size=3)
    assert result.paths == ["good.jpg"]
    assert sorted(result.rejected) == sorted(OTHER_FORMATS)


# -- size ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A 200 kB PNG of 20000x10000 pixels."""
    return write(tmp_path_factory.mktemp("bomb"), "bomb.png", odd_files.bomb_png())


@pytest.mark.parametrize("reader", READERS)
def test_bomb_rejected_fast(bomb, reader):
    start = time.monotonic()
    reason = rejection(READERS[reader], bomb)
    elapsed = time.monotonic() - start
    assert "20000x10000 pixels is more than max_pixels (178956970)" in reason
    assert elapsed < 1.0


def test_bomb_memory_stays_small(bomb):
    # A fresh interpreter, so its peak memory is not that of earlier tests.
    # Decoding the bomb would take 200 MB for its pixels alone.
    script = textwrap.dedent("""
        import resource, sys
        from concepts_extraction.decode import ImageRejected, load_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_image(sys.argv[1])
        except ImageRejected:
            pass
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) // 1024)
        """)
    completed = subprocess.run(
        [sys.executable, "-c", script, str(bomb)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(completed.stdout) < 20  # MiB of extra peak memory


@pytest.mark.parametrize(
    "limit, accepted", [(SIDE * SIDE, True), (SIDE * SIDE - 1, False)]
)
def test_max_pixels_limit(tmp_path, limit, accepted):
    path = write(tmp_path, "rgb.png", odd_files.encode(odd_files.picture(1), "PNG"))
    try:
        inspect_image(path, max_pixels=limit)
        outcome = True
    except ImageRejected:
        outcome = False
    assert outcome == accepted


# -- files that are not regular files ----------------------------------------


def test_fifo_rejected_without_hanging(tmp_path):
    # Opening a named pipe for reading blocks until a writer comes. The check
    # runs in a thread, so a hang fails the test instead of stopping it.
    os.mkfifo(tmp_path / "pipe.jpg")
    outcome = []

    def read():
        try:
            load_image(tmp_path / "pipe.jpg")
        except ImageRejected as rejected:
            outcome.append(str(rejected))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert outcome == [
        "a named pipe (FIFO), not a regular file: it contains no image. Move it out "
        "of the input folder"
    ]


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda path: os.symlink("missing.jpg", path), "broken symbolic link"),
        (lambda path: os.symlink(path.name, path), "symbolic link loop"),
        (lambda path: path.mkdir(), "a folder, not a regular file"),
        (lambda path: None, "file not found"),
    ],
    ids=["dangling", "loop", "folder", "deleted"],
)
@pytest.mark.parametrize("reader", READERS)
def test_special_entry_rejected(tmp_path, reader, make, words):
    path = tmp_path / "x.jpg"
    make(path)
    assert words in rejection(READERS[reader], path)


# -- discovery ---------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_tree(tmp_path_factory) -> tuple[Path, list[odd_files.Expected]]:
    """The tree of every case, and what is expected of each entry."""
    root = tmp_path_factory.mktemp("odd") / "photos"
    return root, odd_files.build_tree(root, PHOTOS)


def on_disk(root: Path) -> set[str]:
    """Lists the entries of the tree as a person counts them, without following links.

    Every file, link and special file counts, and so does a hidden folder,
    whose contents are not read. Folders themselves do not count.
    """
    entries = set()
    for folder, folders, files in os.walk(root):
        relative = os.path.relpath(folder, root)
        prefix = "" if relative == "." else relative + "/"
        entries.update(prefix + name for name in files)
        for name in list(folders):
            if name.startswith(".") or os.path.islink(os.path.join(folder, name)):
                entries.add(prefix + name)
                folders.remove(name)
    return entries


def test_tree_lists_every_entry(odd_tree):
    # Checks the test's own expectations: none is missing or extra.
    root, expected = odd_tree
    assert {case.path for case in expected} == on_disk(root)


def test_discover_images(odd_tree):
    root, expected = odd_tree
    images, _ = find_images(root)
    named = {case.path for case in expected if case.reject != SKIPPED}
    assert set(images["path"]) == named


def test_discover_skipped_reasons(odd_tree):
    root, expected = odd_tree
    _, skipped = find_images(root)
    reasons = {case.path: case.words for case in expected if case.reject == SKIPPED}
    assert dict(zip(skipped["path"], skipped["reason"])) == reasons


def test_discover_same_name_two_folders(odd_tree):
    root, _ = odd_tree
    images, _ = find_images(root)
    folders = images.loc[images["path"].str.endswith("/x.jpg"), "folder"]
    assert sorted(folders) == sorted(["names", odd_files.DEEP_FOLDER])


def test_discover_folder_ids_differ():
    assert folder_id("names") != folder_id(odd_files.DEEP_FOLDER)


def test_discover_undecodable_name(odd_tree):
    root, _ = odd_tree
    path = "names/" + os.fsdecode(odd_files.LATIN1_NAME)
    on_disk_name = os.fsencode(resolve(root, path).name)
    assert on_disk_name == odd_files.LATIN1_NAME


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any folder")
def test_discover_unreadable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    write(locked, "x.jpg", b"")
    locked.chmod(0)
    try:
        images, skipped = find_images(tmp_path)
    finally:
        locked.chmod(0o755)
    assert (len(images), list(skipped["path"])) == (0, ["locked"])


# -- file names in JSON ------------------------------------------------------


def test_json_undecodable_name_escaped():
    name = os.fsdecode(b"caf\xe9 \xff.jpg")
    assert b'"caf\\udce9 \\udcff.jpg"' in jsonio.dumps({"path": name})


def test_json_undecodable_name_round_trip():
    original = b"caf\xe9 \xff\x80.jpg"
    decoded = json.loads(jsonio.dumps([os.fsdecode(original)]))
    assert os.fsencode(decoded[0]) == original


def test_json_output_is_utf8():
    text = jsonio.dumps({os.fsdecode(b"\xff"): "café"}).decode("utf-8")
    assert "café" in text


# -- numbers -----------------------------------------------------------------


def tiny_keras_forward():
    """Returns the forward pass of a tiny Keras model, and its input side.

    The model takes the mean colour of the image and divides it by its own
    sum, so a red image scores highest on class 0, green on 1 and blue on 2,
    and an all-black image gives 0 / 0 = NaN in every output.
    """
    import keras

    inputs = keras.Input((SIDE, SIDE, 3))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    share = keras.layers.Lambda(lambda x: x / keras.ops.sum(x, axis=1, keepdims=True))(
        mean
    )
    logits = keras.layers.Dense(1000, use_bias=False)(share)
    model = keras.Model(inputs, logits)
    kernel = np.zeros((3, 1000), dtype=np.float32)
    kernel[[0, 1, 2], [0, 1, 2]] = 20.0
    model.layers[-1].set_weights([kernel])
    return lambda images: np.asarray(model(images.astype(np.float32), training=False))


@pytest.fixture(scope="module")
def nan_result(tmp_path_factory) -> ChunkResult:
    folder = tmp_path_factory.mktemp("nan")
    colours = {
        "red.png": RED,
        "black.png": (0, 0, 0),
        "green.png": (0, 255, 0),
        "blue.png": BLUE,
    }
    files = [
        (
            name,
            write(
                folder,
                name,
                odd_files.encode(Image.new("RGB", (SIDE, SIDE), colour), "PNG"),
            ),
        )
        for name, colour in colours.items()
    ]
    classifier = Classifier("tiny", tiny_keras_forward(), Preprocessing(size=SIDE))
    return classify_files(files, classifier, batch_size=2)


def test_nan_rejected(nan_result):
    assert nan_result.rejected == {
        "black.png": "the model's output contains NaN or infinity"
    }


def test_nan_others_kept_in_place(nan_result):
    top = dict(zip(nan_result.paths, nan_result.probabilities.argmax(axis=1)))
    assert top == {"red.png": 0, "green.png": 1, "blue.png": 2}


def test_nan_json_strict(nan_result):
    def reject_constant(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    document = json.loads(
        jsonio.dumps(folder_result([nan_result], num_concepts=3)),
        parse_constant=reject_constant,
    )
    assert sorted(document["images"]) == ["blue.png", "green.png", "red.png"]


# -- atomic writes -----------------------------------------------------------


def test_save_chunk_killed_mid_write(tmp_path):
    # A process writes a large chunk over an older one and is killed with
    # SIGKILL while the new file is being written. The older file must still
    # be whole, because save_chunk writes elsewhere and renames at the end.
    target = tmp_path / "0.npz"
    save_chunk(target, ChunkResult(["old.jpg"], np.full((1, 1000), 1e-3, np.float32)))
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from concepts_extraction.classify import ChunkResult, save_chunk
        rows = 60_000
        paths = [f"image_{index}.jpg" for index in range(rows)]
        probabilities = np.full((rows, 1000), 1e-3, dtype=np.float32)
        print("ready", flush=True)
        save_chunk(sys.argv[1], ChunkResult(paths, probabilities))
        """)
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True
    )
    process.stdout.readline()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        # Any other file with bytes in it is the new chunk being written.
        writing = [path for path in tmp_path.iterdir() if path != target]
        if any(path.stat().st_size > 0 for path in writing):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert load_chunk(target).paths == ["old.jpg"]


def test_write_json_failure_keeps_old_file(tmp_path):
    target = tmp_path / "result.json"
    jsonio.write_json(target, {"images": 1})
    with pytest.raises(ValueError):
        jsonio.write_json(target, {"images": float("nan")})
    assert jsonio.read_json(target) == {"images": 1}


# -- whole runs --------------------------------------------------------------
#
# The tree goes through Snakemake with the default non_rgb: reject, and through
# the `concepts_extraction` command with --non-rgb convert.

RUN_TIMEOUT_S = 600


def prepare_workdir(workdir: Path, model: Path) -> Path:
    """Makes a workflow folder with the converted model already in place."""
    (workdir / "resources").mkdir(parents=True)
    (workdir / "resources" / "efficientnet_lite0.keras").write_bytes(model.read_bytes())
    return workdir


def snakemake_command(workdir: Path, overrides: dict) -> list[str]:
    """Returns the command that runs the workflow with config overrides."""
    overrides_yaml = workdir / "overrides.yaml"
    overrides_yaml.write_text(yaml.safe_dump(overrides))
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--cores", "2",
        "--configfile", str(REPO / "config" / "config.yaml"), str(overrides_yaml),
    ]  # fmt: skip


def cli_command() -> list[str]:
    """Returns the installed `concepts_extraction` command."""
    script = Path(sys.executable).with_name("concepts_extraction")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "concepts_extraction.cli"]


@pytest.fixture(scope="module")
def reject_run(odd_tree, efficientnet_model, tmp_path_factory):
    """Runs Snakemake on the tree with the default non_rgb: reject.

    Returns the finished process, the final document and the workflow folder.
    """
    root, _ = odd_tree
    workdir = prepare_workdir(
        tmp_path_factory.mktemp("reject") / "work", efficientnet_model
    )
    overrides = {
        "input_dir": str(root),
        "output": "results/concepts.json",
        "model": "efficientnet_lite0",
        "classify": {"threads": 1},
    }
    completed = subprocess.run(
        snakemake_command(workdir, overrides),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    output = workdir / "results" / "concepts.json"
    document = jsonio.read_json(output) if output.exists() else None
    return completed, document, workdir


@pytest.fixture(scope="module")
def convert_run(odd_tree, efficientnet_model, tmp_path_factory):
    """Runs the command on the tree with --non-rgb convert.

    Returns the finished process, the final document and the output file.
    """
    root, _ = odd_tree
    folder = tmp_path_factory.mktemp("convert")
    workdir = prepare_workdir(folder / "work", efficientnet_model)
    output = folder / "out.json"
    command = cli_command() + [
        "-p", str(root), "-j", str(output), "--model", "efficientnet_lite0",
        "--non-rgb", "convert", "--workdir", str(workdir), "--cores", "2",
    ]  # fmt: skip
    completed = subprocess.run(
        command, cwd=folder, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    document = jsonio.read_json(output) if output.exists() else None
    return completed, document, output


def outcomes(document: dict) -> dict[str, str]:
    """Returns each listed path's outcome in a result document."""
    listed = {path: CLASSIFIED for path in document["images"]}
    listed.update({path: REJECTED for path in document["rejected"]})
    return listed


def expected_summary(expected: list[odd_files.Expected], outcome) -> dict:
    """Returns the summary that a run must report, given each case's outcome."""
    counts = Counter(outcome(case) for case in expected)
    skipped = Counter(case.words for case in expected if outcome(case) == SKIPPED)
    return {
        "classified": counts[CLASSIFIED],
        "rejected": counts[REJECTED],
        "skipped": counts[SKIPPED],
        "skipped_by_reason": dict(skipped),
    }


@pytest.mark.slow
def test_reject_run_exit_status(reject_run):
    completed, _, _ = reject_run
    assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.mark.slow
def test_reject_run_outcomes(reject_run, odd_tree):
    _, document, _ = reject_run
    _, expected = odd_tree
    listed = {case.path: case.reject for case in expected if case.reject != SKIPPED}
    assert outcomes(document) == listed


@pytest.mark.slow
def test_reject_run_reasons(reject_run, odd_tree):
    _, document, _ = reject_run
    _, expected = odd_tree
    missing = {
        case.path: document["rejected"][case.path]
        for case in expected
        if case.reject == REJECTED and case.words not in document["rejected"][case.path]
    }
    assert missing == {}


@pytest.mark.slow
def test_reject_run_summary(reject_run, odd_tree):
    _, document, _ = reject_run
    _, expected = odd_tree
    summary = expected_summary(expected, lambda case: case.reject)
    assert document["summary"] == summary


@pytest.mark.slow
def test_reject_run_accounts_for_disk(reject_run, odd_tree):
    root, _ = odd_tree
    _, document, _ = reject_run
    summary = document["summary"]
    total = summary["classified"] + summary["rejected"] + summary["skipped"]
    assert total == len(on_disk(root))


@pytest.mark.slow
def test_reject_run_folder_files(reject_run):
    # The per-folder JSON files list the rejected files too.
    _, document, workdir = reject_run
    rejected = {}
    for path in (workdir / "results" / "folders" / "efficientnet_lite0").glob("*.json"):
        rejected.update(jsonio.read_json(path)["rejected"])
    assert rejected == document["rejected"]


@pytest.mark.slow
def test_reject_run_paths_exist(reject_run, odd_tree):
    root, _ = odd_tree
    _, document, _ = reject_run
    paths = list(document["images"]) + list(document["rejected"])
    absent = [path for path in paths if not os.path.lexists(os.fsencode(root / path))]
    assert absent == []


@pytest.mark.slow
def test_reject_run_no_name_reaches_shell(reject_run, convert_run, odd_tree):
    # A shell would run in the workflow folder or the caller's folder.
    root, _ = odd_tree
    _, _, workdir = reject_run
    _, _, output = convert_run
    created = [
        os.path.join(folder, name)
        for top in (root.parent, workdir.parent, output.parent)
        for folder, _, files in os.walk(top)
        for name in files
        if name in odd_files.SHELL_MARKERS
    ]
    created += [name for name in os.listdir(REPO) if name in odd_files.SHELL_MARKERS]
    assert created == []


@pytest.fixture(scope="module")
def efficientnet_classifier(efficientnet_model):
    """The real EfficientNet-Lite0, loaded in this process."""
    return load_classifier("efficientnet_lite0", efficientnet_model)


@pytest.mark.slow
def test_reject_run_results_match_files(reject_run, odd_tree, efficientnet_classifier):
    # Every result must be that of its own file: each file is classified
    # alone here, and its top concept compared with the run's.
    root, _ = odd_tree
    _, document, _ = reject_run
    mismatched = []
    for path, concepts in document["images"].items():
        alone = classify_files([(path, resolve(root, path))], efficientnet_classifier)
        [[alone_top]] = top_concepts(alone.probabilities, 1)
        same = concepts[0]["wnid"] == alone_top["wnid"] and np.isclose(
            concepts[0]["probability"], alone_top["probability"], atol=1e-3
        )
        if not same:
            mismatched.append(path)
    assert mismatched == []


@pytest.mark.slow
def test_reject_run_logs_undecodable_names(reject_run):
    _, _, workdir = reject_run
    broken = [
        str(path)
        for path in (workdir / "logs").rglob("*.log")
        if "Logging error" in path.read_text(errors="replace")
    ]
    assert broken == []


@pytest.mark.slow
def test_convert_run_exit_status(convert_run):
    completed, _, _ = convert_run
    assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.mark.slow
def test_convert_run_outcomes(convert_run, odd_tree):
    _, document, _ = convert_run
    _, expected = odd_tree
    listed = {case.path: case.convert for case in expected if case.convert != SKIPPED}
    assert outcomes(document) == listed


@pytest.mark.slow
def test_convert_run_modes(convert_run, odd_tree):
    _, document, _ = convert_run
    _, expected = odd_tree
    assert document["converted"] == {
        case.path: case.mode for case in expected if case.mode
    }


@pytest.mark.slow
def test_convert_run_summary(convert_run, odd_tree):
    _, document, _ = convert_run
    _, expected = odd_tree
    summary = expected_summary(expected, lambda case: case.convert)
    assert document["summary"] == summary


@pytest.mark.slow
def test_convert_run_same_name_distinct(convert_run):
    _, document, _ = convert_run
    top = {
        path: document["images"][path][0]["concept"]
        for path in ("names/x.jpg", f"{odd_files.DEEP_FOLDER}/x.jpg")
    }
    assert len(set(top.values())) == 2


@pytest.mark.slow
def test_convert_run_undecodable_name_bytes(convert_run):
    _, _, output = convert_run
    document = json.loads(output.read_bytes())
    names = {os.fsencode(path.rsplit("/", 1)[-1]) for path in document["images"]}
    assert odd_files.LATIN1_NAME in names


@pytest.mark.slow
def test_convert_run_undecodable_name_escaped(convert_run):
    _, _, output = convert_run
    assert b'"names/latin-1 caf\\udce9.jpg"' in output.read_bytes()


# -- a classify job killed mid-run -------------------------------------------


def find_classify_process(parent: psutil.Process) -> psutil.Process | None:
    """Returns the process that runs the workflow's classify script, if any."""
    for child in parent.children(recursive=True):
        try:
            if any(part.endswith("classify.py") for part in child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


@pytest.mark.slow
def test_killed_job_rerun(tmp_path, efficientnet_model):
    # The classify job is killed with SIGKILL once it has started on its chunk.
    # The run fails and leaves no chunk file, and the next run classifies
    # every image.
    tree = tmp_path / "photos"
    tree.mkdir()
    for seed in range(4):
        write(
            tree, f"image_{seed}.jpg", odd_files.encode(odd_files.picture(seed), "JPEG")
        )
    write(tree, "broken.jpg", odd_files.truncated_jpeg())
    workdir = prepare_workdir(tmp_path / "work", efficientnet_model)
    overrides = {
        "input_dir": str(tree),
        "output": "results/concepts.json",
        "model": "efficientnet_lite0",
        "classify": {"threads": 1},
    }
    command = snakemake_command(workdir, overrides)
    images, _ = find_images(tree)
    (chunk_id,) = set(split_chunks(images, 500)["chunk"])
    log = (
        workdir / "logs" / "classify" / "efficientnet_lite0" / folder_id("")
        / f"{chunk_id}.log"
    )  # fmt: skip

    process = subprocess.Popen(
        command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    killed = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and killed is None:
        job = find_classify_process(psutil.Process(process.pid))
        if job is not None and log.exists() and "Loading" in log.read_text():
            job.send_signal(signal.SIGKILL)
            killed = job.pid
        time.sleep(0.05)
    first_status = process.wait(timeout=RUN_TIMEOUT_S)
    chunk = (
        workdir
        / "results"
        / "classify"
        / "efficientnet_lite0"
        / folder_id("")
        / f"{chunk_id}.npz"
    )
    chunk_left = chunk.exists()

    second = subprocess.run(
        command, cwd=workdir, capture_output=True, timeout=RUN_TIMEOUT_S
    )
    document = jsonio.read_json(workdir / "results" / "concepts.json")

    assert killed is not None
    assert first_status != 0
    assert not chunk_left
    assert second.returncode == 0
    assert outcomes(document) == {
        **{f"image_{seed}.jpg": CLASSIFIED for seed in range(4)},
        "broken.jpg": REJECTED,
    }
