"""The `concepts_extraction` command, compatible with the cluster tool it replaces.

With -p it runs the Snakemake workflow on a folder, so results are cached per
chunk; with -i it classifies one image in this process.
"""

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from . import jsonio
from .aggregate import merge_results, top_concepts
from .classify import classify_files
from .discover import is_image_name
from .googlenet import TFHUB_HANDLE
from .models import MODEL_NAMES, load_classifier, prepare_model

logger = logging.getLogger("concepts_extraction")

# Exit statuses: 0 when the run completed, whatever was rejected.
EXIT_USAGE = 2
EXIT_RUN_FAILED = 1


def cache_dir() -> Path:
    """Returns the folder for prepared models and workflow runs."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "concepts_extraction"


def find_snakefile() -> Path:
    """Finds the workflow's Snakefile in the checkout that the package comes from."""
    override = os.environ.get("CONCEPTS_EXTRACTION_SNAKEFILE")
    snakefile = Path(override) if override else Path(__file__).parents[2] / "Snakefile"
    if not snakefile.is_file():
        raise FileNotFoundError(
            f"The workflow's Snakefile was not found at {snakefile}. Install the "
            "package from a checkout with `pip install -e .`, or set "
            "CONCEPTS_EXTRACTION_SNAKEFILE to the checkout's Snakefile."
        )
    return snakefile


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="concepts_extraction",
        description="Top-N ImageNet concepts of images, as JSON.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "-p",
        "--input_path",
        help="folder of .jpg and .png images, searched recursively",
    )
    source.add_argument("-i", "--image", help="a single image")
    parser.add_argument(
        "-n",
        "--num_concepts",
        type=int,
        default=5,
        help="concepts per image, most probable first (default: 5)",
    )
    parser.add_argument(
        "-j", "--out_json", help="output JSON file (default: standard output)"
    )
    parser.add_argument("--model", choices=MODEL_NAMES, default="googlenet")
    parser.add_argument(
        "--model-handle",
        default=TFHUB_HANDLE,
        help="GoogLeNet: URL of a TF-Hub model or .tar.gz, or a SavedModel folder, "
        "used only while the model cache has no prepared copy",
    )
    parser.add_argument(
        "--non-rgb",
        choices=("reject", "convert"),
        default="reject",
        help="what to do with images that have not got 3 colour channels",
    )
    parser.add_argument(
        "--cores", default="all", help="CPU cores to use, or 'all' (default: all)"
    )
    parser.add_argument(
        "--unlock",
        action="store_true",
        help="with -p: remove the lock that a killed run left on the cached results",
    )
    parser.add_argument(
        "--workdir",
        help="folder for the workflow's cached results (default: a folder per "
        "input path under ~/.cache/concepts_extraction/runs)",
    )
    args = parser.parse_args(argv)
    for flag, value in (
        ("-p", args.input_path),
        ("-i", args.image),
        ("-j", args.out_json),
    ):
        if value == "":
            parser.error(f"{flag} must name a path. Received an empty string")
    if not 1 <= args.num_concepts <= 1000:
        parser.error(f"-n must be between 1 and 1000. Received: {args.num_concepts}")
    if args.cores != "all" and not (args.cores.isdigit() and int(args.cores) >= 1):
        parser.error(f"--cores must be 'all' or at least 1. Received: {args.cores}")
    return args


def check_output(path: str, image: str | None) -> None:
    """Fails before the run if the -j file could not be written."""
    out = Path(path)
    if image and out.exists() and Path(image).exists() and out.samefile(image):
        raise ValueError(
            f"-j and -i name the same file {out}, which the JSON would replace. "
            "Choose another -j path."
        )
    if out.is_dir():
        raise IsADirectoryError(f"-j must name a file, not the folder {out}.")
    if is_image_name(out.name):
        raise ValueError(
            f"-j names the image file {out}, which the JSON would replace. Choose "
            "a path ending in .json."
        )
    folder = out.absolute().parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The folder of the -j file {out} does not exist. Create it first."
        )
    # Creating a file is the real test, because os.access can allow a folder
    # where creating a file fails, such as /proc for root.
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{out.name}."):
            pass
    except OSError as error:
        raise PermissionError(
            f"The -j file {out} cannot be written: {error.strerror or error}. "
            "Choose a folder where you can create files."
        ) from None


def check_input_folder(path: str) -> Path:
    """Returns the -p folder as an absolute path, or fails if it is not a folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise NotADirectoryError(
            f"The input folder {folder} does not exist or is not a folder."
        )
    return folder.resolve()


def run_folder(args: argparse.Namespace) -> dict:
    """Runs the Snakemake workflow on a folder and returns the final document."""
    input_dir = check_input_folder(args.input_path)
    key = hashlib.sha1(os.fsencode(input_dir), usedforsecurity=False).hexdigest()
    workdir = Path(args.workdir or cache_dir() / "runs" / key[:16]).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    # Every run shares one prepared copy of each model.
    resources = workdir / "resources"
    if not resources.exists():
        shared = cache_dir() / "resources"
        shared.mkdir(parents=True, exist_ok=True)
        resources.symlink_to(shared, target_is_directory=True)

    # The values go through a YAML file, so that no path is parsed as a number,
    # a boolean or a KEY=VALUE list.
    overrides = workdir / "config.cli.yaml"
    overrides.write_text(
        yaml.safe_dump(
            {
                "input_dir": str(input_dir),
                "output": "results/concepts.json",
                "model": args.model,
                "googlenet_handle": args.model_handle,
                "num_concepts": args.num_concepts,
                "non_rgb": args.non_rgb,
            }
        )
    )
    snakefile = find_snakefile()
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(snakefile),
        "--directory", str(workdir),
        "--configfile", str(snakefile.parent / "config" / "config.yaml"),
        str(overrides),
        "--cores", str(args.cores),
        "--rerun-incomplete",
        "--show-failed-logs",
    ]  # fmt: skip
    if args.unlock:
        subprocess.run([*command, "--unlock"], stdout=sys.stderr, check=True)
    completed = subprocess.run(command, stdout=sys.stderr)
    if completed.returncode != 0:
        message = (
            f"The workflow failed with exit status {completed.returncode}; its "
            f"logs are under {workdir / 'logs'}."
        )
        # Snakemake removes its own locks when it stops, so a lock left behind
        # belongs to a run that is still going or was killed.
        if any((workdir / ".snakemake" / "locks").glob("*")):
            message += (
                " Another run holds the lock on these results. If no other run "
                "on this input folder is still going (a killed run leaves its "
                "lock behind), run the same command again with --unlock."
            )
        raise RuntimeError(message)
    return jsonio.read_json(workdir / "results" / "concepts.json")


def run_image(args: argparse.Namespace) -> dict:
    """Classifies one image in this process and returns the final document."""
    image = Path(args.image)
    if not image.is_file():
        raise FileNotFoundError(f"The image {image} does not exist or is not a file.")

    model_path = prepare_model(args.model, cache_dir() / "resources", args.model_handle)
    classifier = load_classifier(args.model, model_path)
    result = classify_files([(image.name, image)], classifier, non_rgb=args.non_rgb)
    images = dict(
        zip(result.paths, top_concepts(result.probabilities, args.num_concepts))
    )
    folder = {
        "images": images,
        "rejected": result.rejected,
        "converted": result.converted,
    }
    return merge_results([folder], args.model, args.num_concepts, skipped={})


def main(argv: list[str] | None = None) -> int:
    """Runs the command and returns its exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # TensorFlow's C++ INFO and WARNING lines would bury the summary.
    # NOTE: TensorFlow 2.21 still prints its first absl lines (oneDNN, CUDA
    # drivers) whatever this variable is set to.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.out_json:
            check_output(args.out_json, args.image)
        document = run_folder(args) if args.input_path is not None else run_image(args)
        if args.out_json:
            jsonio.write_json(args.out_json, document)
        else:
            sys.stdout.buffer.write(jsonio.dumps(document))
    except (OSError, RuntimeError, ValueError, subprocess.CalledProcessError) as error:
        logger.error("concepts_extraction: %s", error)
        return EXIT_RUN_FAILED

    summary = document["summary"]
    logger.info(
        "Classified %d images, rejected %d, skipped %d",
        summary["classified"], summary["rejected"], summary["skipped"],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
