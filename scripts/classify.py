"""Classify one chunk of images with the chosen model."""

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))

# TensorFlow's C++ libraries write to file descriptor 2, so redirect it too.
sys.stderr = open(
    snakemake.log[0], "w", buffering=1, encoding="utf-8", errors="backslashreplace"
)
os.dup2(sys.stderr.fileno(), 2)
logging.basicConfig(
    stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s"
)

import tensorflow as tf

from concepts_extraction import jsonio
from concepts_extraction.classify import classify_files, save_chunk
from concepts_extraction.discover import resolve
from concepts_extraction.models import load_classifier

threads = snakemake.threads
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
logging.info("TensorFlow sees GPUs: %s", tf.config.list_physical_devices("GPU"))

config = snakemake.config
validated = jsonio.read_json(snakemake.input.images)
files = [
    (row["path"], resolve(config["input_dir"], row["path"]))
    for row in validated
    if row["reason"] is None
]

classifier = load_classifier(snakemake.params.model, snakemake.input.model)
result = classify_files(
    files,
    classifier,
    batch_size=config["batch_size"],
    workers=threads,
    non_rgb=config["non_rgb"],
    max_pixels=config["max_pixels"],
)
for row in validated:
    if row["reason"] is not None:
        result.rejected[row["path"]] = row["reason"]

save_chunk(snakemake.output[0], result)
