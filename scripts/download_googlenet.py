"""Download GoogLeNet once into resources/, for every classify job to reuse."""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

from concepts_extraction.googlenet import download_googlenet

download_googlenet(snakemake.params.handle, snakemake.output[0])
