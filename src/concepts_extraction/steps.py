"""The workflow's small per-chunk steps, run in the Snakemake process.

Each step writes its own log file, like the rules that run scripts.
"""

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Iterable, Iterator

from . import jsonio
from .aggregate import folder_result_from_files
from .decode import ImageRejected, inspect_image
from .discover import resolve


@contextlib.contextmanager
def log_to(path: str | os.PathLike, name: str) -> Iterator[logging.Logger]:
    """Sends the records of a logger, and of the package, to a log file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # File names that are not valid UTF-8 are logged as \udcXX escapes.
    handler = logging.FileHandler(
        path, mode="w", encoding="utf-8", errors="backslashreplace"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    package = logging.getLogger("concepts_extraction")
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    # The records go to the job's log only, not to Snakemake's terminal output.
    propagate, package.propagate = package.propagate, False
    try:
        yield logging.getLogger(f"concepts_extraction.{name}")
    finally:
        package.propagate = propagate
        package.removeHandler(handler)
        handler.close()


def write_manifest(images: Iterable, output: str, log: str) -> None:
    """Writes the list of a chunk's images: path, size and modification time."""
    with log_to(log, "discover") as logger:
        rows = [
            {"path": path, "size": size, "mtime_ns": mtime_ns}
            for path, size, mtime_ns in images
        ]
        jsonio.write_json(output, rows)
        logger.info("Listed %d images in %s", len(rows), output)


def validate_chunk(
    manifest: str,
    input_dir: str,
    output: str,
    log: str,
    non_rgb: str,
    max_pixels: int,
) -> None:
    """Checks the header of each image of a chunk and records accepted and rejected."""
    with log_to(log, "validate") as logger:
        start = time.monotonic()
        rows = []
        for image in jsonio.read_json(manifest):
            path = image["path"]
            try:
                info = inspect_image(resolve(input_dir, path), non_rgb, max_pixels)
                rows.append({"path": path, "mode": info.mode, "reason": None})
            except ImageRejected as rejected:
                logger.info("Rejected %s: %s", path, rejected)
                rows.append({"path": path, "mode": None, "reason": str(rejected)})
        jsonio.write_json(output, rows)

        accepted = sum(row["reason"] is None for row in rows)
        logger.info(
            "Validated %d images: %d accepted, %d rejected, in %.2f s",
            len(rows),
            accepted,
            len(rows) - accepted,
            time.monotonic() - start,
        )


def aggregate_folder(chunks: list[str], output: str, log: str, num_concepts: int):
    """Writes the top-N concepts of the images of one folder."""
    with log_to(log, "aggregate") as logger:
        result = folder_result_from_files(chunks, num_concepts)
        jsonio.write_json(output, result)
        logger.info(
            "Top %d concepts of %d images, %d rejected",
            num_concepts,
            len(result["images"]),
            len(result["rejected"]),
        )
