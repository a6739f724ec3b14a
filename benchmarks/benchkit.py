"""Helpers for benchmarks/throughput.py: a random GoogLeNet, test photos, meters.

Nothing here is imported by the package or its tests. TensorFlow and Keras are
imported inside the functions that need them, so the JPEG and meter helpers
stay cheap to import.
"""

from __future__ import annotations

import os
import platform
import random
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# Inception v1 as in TF-Slim, which TF-Hub's GoogLeNet comes from. Each mixed
# block has four branches, with these filter counts: a 1x1 convolution, a 1x1
# then a 3x3, another 1x1 then 3x3 (Slim's "5x5" branch is 3x3 too), and a 3x3
# max pool then a 1x1.
_MIXED = {
    "3b": (64, (96, 128), (16, 32), 32),
    "3c": (128, (128, 192), (32, 96), 64),
    "4b": (192, (96, 208), (16, 48), 64),
    "4c": (160, (112, 224), (24, 64), 64),
    "4d": (128, (128, 256), (24, 64), 64),
    "4e": (112, (144, 288), (32, 64), 64),
    "4f": (256, (160, 320), (32, 128), 128),
    "5b": (256, (160, 320), (32, 128), 128),
    "5c": (384, (192, 384), (48, 128), 128),
}


def inception_v1(num_classes: int = 1001):
    """Builds GoogLeNet (Inception v1) in Keras with random weights.

    The network takes 224x224 RGB floats in [0, 1], like TF-Hub's model, scales
    them to [-1, 1] and returns `num_classes` logits. Every convolution but the
    last is followed by batch normalisation (epsilon 1e-3, no scale) and ReLU.
    """
    import keras
    from keras import layers

    def conv(x, filters, kernel, name, stride=1):
        x = layers.Conv2D(
            filters, kernel, strides=stride, padding="same", use_bias=False, name=name
        )(x)
        x = layers.BatchNormalization(epsilon=1e-3, scale=False, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    def mixed(x, name):
        one, (reduce3, three), (reduce5, five), pool = _MIXED[name]
        branches = [
            conv(x, one, 1, f"mixed_{name}_0"),
            conv(conv(x, reduce3, 1, f"mixed_{name}_1a"), three, 3, f"mixed_{name}_1b"),
            conv(conv(x, reduce5, 1, f"mixed_{name}_2a"), five, 3, f"mixed_{name}_2b"),
            conv(
                layers.MaxPooling2D(3, 1, padding="same")(x), pool, 1, f"mixed_{name}_3"
            ),
        ]
        return layers.Concatenate(name=f"mixed_{name}")(branches)

    inputs = keras.Input((224, 224, 3), name="images")
    x = layers.Rescaling(2.0, offset=-1.0)(inputs)
    x = conv(x, 64, 7, "conv_1a", stride=2)
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    x = conv(x, 64, 1, "conv_2b")
    x = conv(x, 192, 3, "conv_2c")
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    x = mixed(mixed(x, "3b"), "3c")
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    for name in ("4b", "4c", "4d", "4e", "4f"):
        x = mixed(x, name)
    x = layers.MaxPooling2D(2, 2, padding="same")(x)
    x = mixed(mixed(x, "5b"), "5c")
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name="inception_v1")


def save_random_googlenet(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Saves a random-weight Inception v1 with TF-Hub's calling convention.

    The SavedModel is callable on a float32 `(batch, 224, 224, 3)` tensor in
    [0, 1] and returns 1001 logits, so `models.load_classifier("googlenet",
    folder)` loads it like the real model. An existing folder is reused.
    """
    folder = Path(folder)
    if (folder / "saved_model.pb").exists():
        return folder
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    network = inception_v1()

    class Module(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
        def __call__(self, images):
            return self.model(images, training=False)

    module = Module(network)
    partial = folder.with_name(f".{folder.name}.partial")
    tf.saved_model.save(module, str(partial), signatures=module.__call__)
    partial.rename(folder)
    return folder


def _variant(photo: Image.Image, size: tuple[int, int], rng: random.Random):
    """Crops a random part of `photo` with the aspect of `size`, flips, resizes."""
    width, height = photo.size
    aspect = size[0] / size[1]
    scale = rng.uniform(0.6, 1.0)
    crop_w = min(width, height * aspect) * scale
    crop_h = crop_w / aspect
    left = rng.uniform(0, width - crop_w)
    top = rng.uniform(0, height - crop_h)
    box = (left, top, left + crop_w, top + crop_h)
    picture = photo.resize(size, Image.Resampling.BICUBIC, box=box)
    if rng.random() < 0.5:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return picture


def make_jpegs(
    sources: list[Path],
    folder: str | os.PathLike,
    size: tuple[int, int],
    count: int,
    seed: int = 0,
    quality: int = 90,
    noise: float = 0.0,
) -> list[Path]:
    """Writes `count` JPEGs of `size` pixels made from the photos in `sources`.

    Each file is a random crop of one photo (cycling through them), maybe
    mirrored, resized to `size`. `noise` adds Gaussian noise of that standard
    deviation (in 0..255 units), which makes the files as large as a camera's.
    Files already there are reused.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    noise_rng = np.random.default_rng(seed)
    photos = [Image.open(path).convert("RGB") for path in sources]
    paths = []
    for index in range(count):
        photo = photos[index % len(photos)]
        picture = _variant(photo, size, rng)
        path = folder / f"{index:05d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        if noise > 0:
            pixels = np.asarray(picture, dtype=np.float32)
            pixels = pixels + noise_rng.normal(0.0, noise, pixels.shape)
            picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        partial = path.with_name(f".{path.name}.partial")
        picture.save(partial, format="JPEG", quality=quality)
        partial.rename(path)
    return paths


def link_tree(
    files: list[Path], folder: str | os.PathLike, count: int, per_folder: int = 0
) -> list[Path]:
    """Fills `folder` with `count` hard links to `files`, reused in turn.

    With `per_folder`, the links go into subfolders of that many images each.
    Returns the links in order. An existing tree of the same count is reused.
    """
    folder = Path(folder)
    links = []
    for index in range(count):
        name = f"{index:06d}.jpg"
        subfolder = folder / f"f{index // per_folder:05d}" if per_folder else folder
        links.append(subfolder / name)
    if folder.exists() and all(link.exists() for link in links):
        return links
    for index, link in enumerate(links):
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.link(files[index % len(files)], link)
    return links


def _busy_jiffies() -> tuple[int, int]:
    """Returns the machine's busy and total CPU time so far, in clock ticks."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


@dataclass
class Meter:
    """Measures wall time, this process's CPU time with its waited-for children,
    and how many cores other processes kept busy meanwhile.
    """

    wall_s: float = 0.0
    cpu_s: float = 0.0
    others_cores: float = 0.0
    _start: tuple = field(default=(), repr=False)

    def __enter__(self) -> "Meter":
        times = os.times()
        self._start = (
            time.perf_counter(),
            times.user + times.system + times.children_user + times.children_system,
            _busy_jiffies(),
        )
        return self

    def __exit__(self, *exc) -> None:
        times = os.times()
        wall0, cpu0, (busy0, total0) = self._start
        self.wall_s = time.perf_counter() - wall0
        cpu = times.user + times.system + times.children_user + times.children_system
        self.cpu_s = cpu - cpu0
        busy, total = _busy_jiffies()
        cores = os.cpu_count() or 1
        busy_cores = cores * (busy - busy0) / max(total - total0, 1)
        self.others_cores = max(0.0, busy_cores - self.cpu_s / max(self.wall_s, 1e-9))


def peak_rss_mib() -> float:
    """Returns this process's peak resident set size, in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _command(args: list[str]) -> str:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except OSError:
        return ""


def machine_info(torch_python: str | None) -> dict:
    """Describes the machine and the versions that the figures depend on."""
    from importlib import metadata

    lscpu = _command(["lscpu"])
    keep = ("Architecture", "Model name", "CPU(s)", "Thread(s) per core", "L2", "L3")
    cpu = {
        key.strip(): value.strip()
        for key, value in (
            line.split(":", 1) for line in lscpu.splitlines() if ":" in line
        )
        if key.strip().startswith(keep)
    }
    flags = re.search(r"Flags:\s*(.*)", lscpu)
    cpu["AVX-512"] = "yes" if flags and "avx512f" in flags.group(1) else "no"
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    versions = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "pillow", "numpy", "snakemake"):
        versions[package] = metadata.version(package)
    if torch_python:
        versions["peer"] = _command(
            [
                torch_python,
                "-c",
                "import torch, torchvision, PIL; "
                "print(f'torch {torch.__version__}, torchvision "
                "{torchvision.__version__}, pillow {PIL.__version__}')",
            ]
        ).strip()
    return {
        "cpu": cpu,
        "memory_gib": round(total_kib / 2**20, 1),
        "kernel": platform.release(),
        "versions": versions,
        "load_average": os.getloadavg(),
    }
