"""A small SavedModel with GoogLeNet's TF-Hub signature, for tests.

It takes float images in [0, 1] and returns 1001 logits. The background logit
(index 0) is always the largest, so a pipeline that fails to drop it reports
"background". Of the real classes, dark images score highest on index 282
(ILSVRC class 281, tabby cat) and bright ones on index 2 (class 1, goldfish).
"""

import tarfile
from pathlib import Path

import tensorflow as tf

TABBY = 281
GOLDFISH = 1


class StandInGoogLeNet(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
    def __call__(self, images):
        brightness = tf.reduce_mean(images, axis=[1, 2, 3])
        batch = tf.shape(images)[0]
        logits = tf.zeros([batch, 1001])
        columns = tf.constant([[0], [1 + TABBY], [1 + GOLDFISH]])
        updates = tf.stack(
            [
                tf.fill([batch], 20.0),
                8.0 * (1.0 - brightness),
                8.0 * brightness,
            ]
        )
        return tf.transpose(
            tf.tensor_scatter_nd_update(tf.transpose(logits), columns, updates)
        )


def save_standin(folder: Path) -> Path:
    """Saves the stand-in SavedModel into `folder` and returns it."""
    tf.saved_model.save(StandInGoogLeNet(), str(folder))
    return folder


def archive_standin(folder: Path, archive: Path) -> Path:
    """Packs a SavedModel folder as a .tar.gz, the way TF-Hub serves models."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return archive
