import functools
import os
import sys

from snakemake.logging import logger
from snakemake.utils import validate

# The package under src/ is the one implementation of every step; the rules
# import it here and the scripts put the same folder first on sys.path.
sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from concepts_extraction import discover, models, steps

validate(config, schema="../schemas/config.schema.yaml")

MODEL = config["model"]
MODEL_PATH = f"resources/{models.model_filename(MODEL)}"
CLASSIFY_DIR = f"results/classify/{MODEL}"
FOLDERS_DIR = f"results/folders/{MODEL}"


wildcard_constraints:
    folder="[0-9a-f]{12}",
    chunk="[0-9a-f]{10}",


# Discovery scans the input tree once, and only when an input function needs
# it: cluster jobs run classify, whose inputs come from wildcards alone, so
# they never rescan the tree.
@functools.cache
def discovered():
    logger.info(f"Scanning the input folder {config['input_dir']}")
    images, skipped = discover.find_images(config["input_dir"])
    return discover.split_chunks(images, config["chunk_size"]), skipped


@functools.cache
def chunk_listings():
    """Maps each folder id to its chunks, and each chunk to its images."""
    images, _ = discovered()
    listings = {}
    columns = ["folder_id", "chunk", "path", "size", "mtime_ns"]
    for folder, chunk, *image in images[columns].itertuples(index=False):
        listings.setdefault(folder, {}).setdefault(chunk, []).append(tuple(image))
    return listings


def chunk_images(wildcards):
    """Returns the (path, size, mtime_ns) of a chunk's images; a rerun trigger."""
    return chunk_listings()[wildcards.folder][wildcards.chunk]


def folder_chunks(wildcards):
    return [
        f"{CLASSIFY_DIR}/{wildcards.folder}/{chunk}.npz"
        for chunk in chunk_listings()[wildcards.folder]
    ]


def all_folders(wildcards):
    return [f"{FOLDERS_DIR}/{folder}.json" for folder in sorted(chunk_listings())]


def skipped_counts(wildcards):
    _, skipped = discovered()
    return skipped["reason"].value_counts().sort_index().to_dict()


def classify_resource(name):
    return lambda wildcards: config["classify"][name]


def classify_conda_env():
    gpu = config["classify"]["gpu"] > 0
    return f"../../envs/concepts{'-gpu' if gpu else ''}.yaml"
