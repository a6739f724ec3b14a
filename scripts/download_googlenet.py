"""Download GoogLeNet once into resources/, for every classify job to reuse."""

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

from concepts_extraction.googlenet import ModelDownloadError, download_googlenet

try:
    download_googlenet(snakemake.params.handle, os.path.abspath(snakemake.output[0]))
except ModelDownloadError as error:
    # The message gives the fix, and Snakemake prints this log when the job fails.
    logging.error("%s", error)
    sys.exit(1)
