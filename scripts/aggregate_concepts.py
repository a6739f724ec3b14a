"""Merge the per-folder results into the final JSON and log a summary."""

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
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

from concepts_extraction import jsonio
from concepts_extraction.aggregate import merge_results, summary_table

document = merge_results(
    (jsonio.read_json(path) for path in snakemake.input),
    model=snakemake.params.model,
    num_concepts=snakemake.params.num_concepts,
    skipped=snakemake.params.skipped,
)
jsonio.write_json(snakemake.output[0], document)

summary = document["summary"]
logging.info(
    "Classified %d images, rejected %d, skipped %d; wrote %s",
    summary["classified"],
    summary["rejected"],
    summary["skipped"],
    snakemake.output[0],
)
logging.info("%s", summary_table(document).to_string(index=False))
