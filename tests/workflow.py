"""Runs the real Snakemake workflow on a temporary tree, as a subprocess."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def prepare_workdir(workdir: Path, efficientnet_model: Path | None = None) -> Path:
    """Creates a working directory, with the converted model when one is given."""
    workdir.mkdir(parents=True, exist_ok=True)
    if efficientnet_model is not None:
        resources = workdir / "resources"
        resources.mkdir(exist_ok=True)
        shutil.copy(efficientnet_model, resources / "efficientnet_lite0.keras")
    return workdir


def run_snakemake(workdir: Path, config: dict, *extra: str, check: bool = True):
    """Runs the workflow in `workdir` with `config` on top of the default config."""
    overrides = workdir / "overrides.yaml"
    overrides.write_text(yaml.safe_dump(config))
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(REPO / "config" / "config.yaml"), str(overrides),
        "--cores", "2",
        *extra,
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True)
    if check and completed.returncode != 0:
        raise AssertionError(
            f"snakemake exited with {completed.returncode}:\n{completed.stderr[-4000:]}"
        )
    return completed
