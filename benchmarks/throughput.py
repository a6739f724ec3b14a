"""Throughput, memory and scale benchmark of the concept extraction workflow.

Run from the repository root with the project's environment::

    .venv/bin/python benchmarks/throughput.py            # about 21 minutes
    .venv/bin/python benchmarks/throughput.py --quick    # about 7 minutes

In one run, on the same files, it measures for GoogLeNet (Inception v1 with
random weights, built and saved here with TF-Hub's signature) and
EfficientNet-Lite0 (the real, packaged weights):

* model-only: `Classifier.predict` on pre-decoded batches of 64, the ceiling;
* end-to-end: a classify job as the workflow runs it, on N and 2N images, so
  that start-up and rate separate. A fresh process writes the manifest,
  validates, imports TensorFlow, loads the model, and runs `classify_files`
  and `save_chunk`;
* a real `snakemake` run on N and 2N images, and whole runs on two folders;
* naive: one image at a time, decoded at full size, batches of 1;
* the peer: torchvision's GoogLeNet fed by a DataLoader, in its own venv;
* top-1 agreement of draft-mode and full JPEG decoding on real photos;
* the peak RSS of a classify job on 1,000 and 20,000 images;
* `snakemake -n` and a rerun with nothing to do on 1,000 folders of 100 files.

Each figure comes with the CPU load that other processes put on the machine
while it was measured. The figures are printed as tables and written as JSON
under --workdir; the test images, models and runs are kept there too.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit  # noqa: E402

THREADS = 2
BATCH = 64
SIZES = {"640x480": (640, 480), "4000x3000": (4000, 3000)}
MODELS = ("googlenet", "efficientnet_lite0")
# The real photos for the draft-mode check: the bundled ones and, when
# scikit-image is installed, its sample photographs.
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
)
AGREEMENT_SIZES = ((800, 600), (1024, 768), (1500, 1000), (2048, 1536), (4000, 3000))


# ---------------------------------------------------------------------------
# Roles run in fresh processes, so that each measures one TensorFlow set-up
# ---------------------------------------------------------------------------


def _set_threads(threads: int) -> None:
    """Sets TensorFlow's thread pools the way scripts/classify.py does."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))


def role_probe(spec: dict) -> dict:
    """Model-only rate, the naive baseline and single-thread decoding costs."""
    from concepts_extraction.decode import load_image
    from concepts_extraction.models import load_classifier

    files = [Path(path) for path in spec["files"]]
    figures = {}
    sample = files[: spec["decode_sample"]]
    for name in ("draft", "full", "draft_minimum"):
        draft, patch = AGREEMENT_VARIANTS[name]
        with patch():
            times = []
            for _ in range(3):
                began = time.perf_counter()
                for path in sample:
                    load_image(path, draft=draft)
                times.append(time.perf_counter() - began)
        # The first pass reads the files and warms the caches.
        figures[f"decode_{name}_ms"] = 1000 * min(times[1:]) / len(sample)

    _set_threads(THREADS)
    began = time.perf_counter()
    classifier = load_classifier(spec["model"], spec["model_path"])
    figures["load_s"] = time.perf_counter() - began
    batch = np.stack([load_image(files[i % len(files)])[0] for i in range(BATCH)])

    for _ in range(2):
        classifier.predict(batch)
    times = []
    with benchkit.Meter() as meter:
        for _ in range(spec["batches"]):
            began = time.perf_counter()
            classifier.predict(batch)
            times.append(time.perf_counter() - began)
    # The median batch: a burst of load from another process moves it little.
    figures["model_only_images_per_s"] = BATCH / float(np.median(times))
    figures["model_only_mean_images_per_s"] = BATCH * len(times) / sum(times)
    figures["model_only_cpu_ms_per_image"] = 1000 * meter.cpu_s / (BATCH * len(times))
    figures["model_only_others_cores"] = meter.others_cores

    naive = files[: spec["naive"]]
    for path in naive[:2]:
        classifier.predict(load_image(path, draft=False)[0][None])
    with benchkit.Meter() as meter:
        for path in naive:
            classifier.predict(load_image(path, draft=False)[0][None])
    figures["naive_images_per_s"] = len(naive) / meter.wall_s
    figures["naive_others_cores"] = meter.others_cores
    return figures


def role_job(spec: dict) -> dict:
    """Runs a classify job as the workflow does, from the manifest to the .npz."""
    from concepts_extraction import jsonio, steps
    from concepts_extraction.discover import resolve

    timings = {}
    work = Path(spec["work"])
    input_dir = spec["input_dir"]
    began = time.perf_counter()
    rows = []
    for path in spec["paths"]:
        stat = resolve(input_dir, path).stat()
        rows.append((path, stat.st_size, stat.st_mtime_ns))
    steps.write_manifest(rows, work / "manifest.json", work / "discover.log")
    steps.validate_chunk(
        str(work / "manifest.json"),
        input_dir,
        str(work / "validated.json"),
        str(work / "validate.log"),
        non_rgb="reject",
        max_pixels=178_956_970,
    )
    timings["discover_validate_s"] = time.perf_counter() - began

    began = time.perf_counter()
    _set_threads(THREADS)
    from concepts_extraction.classify import classify_files, save_chunk
    from concepts_extraction.models import load_classifier

    timings["import_s"] = time.perf_counter() - began
    began = time.perf_counter()
    classifier = load_classifier(spec["model"], spec["model_path"])
    timings["load_s"] = time.perf_counter() - began

    began = time.perf_counter()
    validated = jsonio.read_json(work / "validated.json")
    files = [
        (row["path"], resolve(input_dir, row["path"]))
        for row in validated
        if row["reason"] is None
    ]
    result = classify_files(files, classifier, batch_size=BATCH, workers=THREADS)
    for row in validated:
        if row["reason"] is not None:
            result.rejected[row["path"]] = row["reason"]
    save_chunk(work / "chunk.npz", result)
    timings["classify_s"] = time.perf_counter() - began
    timings["classified"] = len(result.paths)
    timings["rejected"] = len(result.rejected)
    timings["peak_rss_mib"] = benchkit.peak_rss_mib()
    return timings


@contextlib.contextmanager
def _draft_request_scaled(factor: float):
    """Makes Pillow's JPEG draft mode keep `factor` times the requested size.

    The benchmark tries another draft request this way without a copy of
    decode.load_image: the product's function runs and only Pillow is patched.
    The product requests twice the side that the crop needs, so a factor of
    0.5 gives the bare minimum, the product's earlier request.
    """
    from PIL import JpegImagePlugin

    original = JpegImagePlugin.JpegImageFile.draft

    def draft(self, mode, size):
        if size:
            size = (round(size[0] * factor), round(size[1] * factor))
        return original(self, mode, size)

    JpegImagePlugin.JpegImageFile.draft = draft
    try:
        yield
    finally:
        JpegImagePlugin.JpegImageFile.draft = original


@contextlib.contextmanager
def _bicubic_resizing():
    """Makes Pillow resize with a bicubic filter where bilinear is asked for.

    A reference: how often top-1 changes for a small change that is not draft
    mode at all.
    """
    original = Image.Image.resize

    def resize(self, size, resample=None, *args, **kwargs):
        if resample == Image.Resampling.BILINEAR:
            resample = Image.Resampling.BICUBIC
        return original(self, size, resample, *args, **kwargs)

    Image.Image.resize = resize
    try:
        yield
    finally:
        Image.Image.resize = original


AGREEMENT_VARIANTS = {
    "full": (False, contextlib.nullcontext),
    "draft": (True, contextlib.nullcontext),
    "draft_minimum": (True, lambda: _draft_request_scaled(0.5)),
    "full_bicubic": (False, _bicubic_resizing),
}


def role_agreement(spec: dict) -> dict:
    """Top-1 agreement of draft-mode decoding, and variants, with full decoding."""
    from concepts_extraction.decode import load_image
    from concepts_extraction.models import load_classifier

    _set_threads(THREADS)
    classifier = load_classifier(spec["model"], spec["model_path"])
    files = spec["files"]
    probabilities, decode_ms = {}, {}
    for name, (draft, patch) in AGREEMENT_VARIANTS.items():
        with patch():
            began = time.perf_counter()
            arrays = [load_image(path, draft=draft)[0] for path in files]
            decode_ms[name] = 1000 * (time.perf_counter() - began) / len(files)
        probabilities[name] = np.concatenate(
            [
                classifier.predict(np.stack(arrays[start : start + BATCH]))
                for start in range(0, len(arrays), BATCH)
            ]
        )

    full = probabilities["full"]
    ordered = np.sort(full, axis=1)
    confident = ordered[:, -1] - ordered[:, -2] >= 0.05
    figures = {"images": len(files), "confident_images": int(confident.sum())}
    for name, rows in probabilities.items():
        same = rows.argmax(1) == full.argmax(1)
        top5 = [
            len(set(np.argsort(a)[-5:]) & set(np.argsort(b)[-5:])) / 5
            for a, b in zip(rows, full)
        ]
        figures[name] = {
            "decode_ms": decode_ms[name],
            "top1_agreement": float(same.mean()),
            "top1_agreement_confident": float(same[confident].mean()),
            "top5_overlap": float(np.mean(top5)),
            "max_probability_difference": float(np.abs(rows - full).max()),
        }
    return figures


ROLES = {"probe": role_probe, "job": role_job, "agreement": role_agreement}


# ---------------------------------------------------------------------------
# The orchestration, in the parent process
# ---------------------------------------------------------------------------


def _environment() -> dict:
    """Returns the environment for child processes, with this venv first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    env["PYTHONPATH"] = str(REPO / "src")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def run_role(role: str, spec: dict, work: Path) -> dict:
    """Runs a role in a fresh Python process; returns its figures and wall time."""
    work.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = work / f"{role}.spec.json", work / f"{role}.out.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--role", role, str(spec_path)]
    with open(work / f"{role}.log", "w") as log, benchkit.Meter() as meter:
        subprocess.run(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_environment(),
            check=True,
        )
    figures = json.loads(out_path.read_text())
    figures["wall_s"] = meter.wall_s
    figures["cpu_s"] = meter.cpu_s
    figures["others_cores"] = meter.others_cores
    return figures


JOB_FIXED = ("import_s", "load_s")
PEER_FIXED = ("import_s", "setup_s")


def _variable_s(run: dict, fixed: tuple[str, ...]) -> float:
    """Returns a run's wall time less the fixed costs it timed itself."""
    return run["wall_s"] - sum(run[key] for key in fixed)


def marginal(count: int, small: dict, large: dict, fixed: tuple[str, ...] = ()) -> dict:
    """Separates start-up from the rate, given runs on `count` and 2x images.

    Importing a framework and loading a model take the same work for any
    number of images, but their time varies by up to a second from run to run,
    as much as 250 images take. The `fixed` parts that a run timed itself are
    therefore left out of both runs before the difference is taken.
    """
    extra = _variable_s(large, fixed) - _variable_s(small, fixed)
    rate = count / extra if extra > 0 else float("nan")
    return {
        "images_per_s": rate,
        "cpu_ms_per_image": 1000 * (large["cpu_s"] - small["cpu_s"]) / count,
        "startup_s": small["wall_s"] - count / rate,
        "wall_n_s": small["wall_s"],
        "wall_2n_s": large["wall_s"],
        "others_cores": max(small["others_cores"], large["others_cores"]),
    }


def product_job(
    model: str, model_path: Path, tree: Path, links: list[Path], work: Path
) -> dict:
    """Runs one classify job on `links` and returns its figures."""
    spec = {
        "model": model,
        "model_path": str(model_path),
        "input_dir": str(tree),
        "paths": [link.relative_to(tree).as_posix() for link in links],
        "work": str(work),
    }
    return run_role("job", spec, work)


def snakemake_command(workdir: Path, overrides: Path, *extra: str) -> list[str]:
    """Returns the Snakemake command line of the workflow, as the CLI runs it."""
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(REPO / "config" / "config.yaml"), str(overrides),
        "--cores", str(THREADS),
        *extra,
    ]  # fmt: skip


def prepare_workdir(
    workdir: Path, tree: Path, model: str, model_path: Path, config: dict | None = None
) -> Path:
    """Makes a fresh Snakemake working folder; returns its config overrides."""
    from concepts_extraction.models import model_filename

    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "resources").mkdir(parents=True)
    target = workdir / "resources" / model_filename(model)
    if model_path.is_dir():
        shutil.copytree(model_path, target)
    else:
        shutil.copy(model_path, target)
    # A prepared model older than the rule's script would be prepared again
    # (Snakemake's code trigger compares their times), so the copy is new.
    for path in [target, *target.rglob("*")]:
        os.utime(path)
    overrides = workdir / "config.bench.yaml"
    overrides.write_text(
        json.dumps({"input_dir": str(tree), "model": model, **(config or {})})
    )
    return overrides


def snakemake_run(workdir: Path, overrides: Path, *extra: str) -> dict:
    """Runs Snakemake and returns its wall time and output."""
    with benchkit.Meter() as meter:
        completed = subprocess.run(
            snakemake_command(workdir, overrides, *extra),
            capture_output=True,
            text=True,
            env=_environment(),
        )
    (workdir / f"snakemake{len(list(workdir.glob('snakemake*.log')))}.log").write_text(
        completed.stdout + completed.stderr
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"Snakemake failed in {workdir}:\n{completed.stderr[-3000:]}"
        )
    return {
        "wall_s": meter.wall_s,
        "cpu_s": meter.cpu_s,
        "others_cores": meter.others_cores,
        "output": completed.stdout + completed.stderr,
    }


def peer_run(torch_python: str, links: list[Path], work: Path, batches: int) -> dict:
    """Runs the PyTorch peer on `links` in its own venv."""
    work.mkdir(parents=True, exist_ok=True)
    listing, out = work / "files.txt", work / "peer.json"
    listing.write_text("".join(f"{link}\n" for link in links))
    command = [
        torch_python, str(Path(__file__).with_name("peer_torch.py")),
        "--files", str(listing), "--json", str(out),
        "--batch", str(BATCH), "--workers", str(THREADS), "--threads", str(THREADS),
        "--model-only-batches", str(batches),
    ]  # fmt: skip
    with open(work / "peer.log", "w") as log, benchkit.Meter() as meter:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
    figures = json.loads(out.read_text())
    # The model-only passes ran first, in the same process: not part of the run.
    figures["wall_s"] = meter.wall_s - figures.get("model_only_s", 0.0)
    figures["cpu_s"] = meter.cpu_s - figures.get("model_only_cpu_s", 0.0)
    figures["others_cores"] = meter.others_cores
    return figures


def say(message: str) -> None:
    """Prints a progress line with the time since the start."""
    print(f"[{time.perf_counter() - START:6.0f} s] {message}", flush=True)


def prepare_models(work: Path) -> dict[str, Path]:
    """Builds the random GoogLeNet and converts EfficientNet-Lite0, once."""
    from concepts_extraction.models import prepare_model

    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); import benchkit; "
        "benchkit.save_random_googlenet(sys.argv[1])"
    )
    googlenet = work / "models" / "googlenet"
    if not googlenet.exists():
        subprocess.run(
            [sys.executable, "-c", code, str(googlenet), str(Path(__file__).parent)],
            check=True,
            env=_environment(),
        )
    efficientnet = prepare_model("efficientnet_lite0", work / "models", "")
    return {"googlenet": googlenet, "efficientnet_lite0": efficientnet}


def bundled_photos() -> list[Path]:
    """Lists the photos shipped in example/photos."""
    return sorted(p for p in (REPO / "example" / "photos").rglob("*") if p.is_file())


def real_photos() -> list[Path]:
    """Lists the bundled photos and scikit-image's sample photos, when installed."""
    import importlib.util

    photos = bundled_photos()
    spec = importlib.util.find_spec("skimage")
    if spec and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "data"
        photos += [data / name for name in SKIMAGE_PHOTOS if (data / name).exists()]
    # The same picture may be in both, as JPEG and PNG: keep the first.
    unique = {}
    for photo in photos:
        unique.setdefault(photo.stem, photo)
    return list(unique.values())


def _fastest(runs: list[dict], fixed: tuple[str, ...] = ()) -> dict:
    """Returns the run with the shortest time, because other load only adds to it."""
    return min(runs, key=lambda run: _variable_s(run, fixed))


CLASSIFIED = re.compile(r"Classified (\d+) images, rejected \d+, in ([\d.]+) s")


def _snakemake_once(workdir, tree, model, model_path, config, *extra) -> dict:
    """Runs the workflow once in a fresh folder; adds its classify jobs' times."""
    overrides = prepare_workdir(workdir, tree, model, model_path, config)
    run = snakemake_run(workdir, overrides, *extra)
    run.pop("output")
    run["chunks"] = len(list((workdir / "results" / "classify").rglob("*.npz")))
    # The classify jobs' own logs time classify_files, to a tenth of a second.
    run["classify_s"] = 0.0
    for log in (workdir / "logs" / "classify").rglob("*.log"):
        for _, seconds in CLASSIFIED.findall(log.read_text(errors="replace")):
            run["classify_s"] += float(seconds)
    return run


def measure_throughput(args, work: Path, models: dict, report: dict) -> None:
    """Model-only, end-to-end, naive, Snakemake and peer figures for each size."""
    count, repeats = args.images, range(args.repeats)
    for size_name, size in SIZES.items():
        distinct = benchkit.make_jpegs(
            bundled_photos(), work / "photos" / size_name, size, args.distinct
        )
        trees = {}
        for images in (count, 2 * count):
            tree = work / "trees" / f"{size_name}-{images}"
            trees[images] = (tree, benchkit.link_tree(distinct, tree, images))
        report["photos"][size_name] = {
            "distinct_files": len(distinct),
            "mean_file_kib": float(
                np.mean([path.stat().st_size for path in distinct]) / 1024
            ),
        }
        for model in args.models:
            key = f"{model} {size_name}"
            figures = report["throughput"].setdefault(key, {})
            say(f"{key}: model-only and naive")
            probe_spec = {
                "model": model,
                "model_path": str(models[model]),
                "files": [str(path) for path in distinct],
                "batches": args.batches,
                "naive": args.naive,
                "decode_sample": min(len(distinct), 24),
            }
            figures["probe"] = run_role("probe", probe_spec, work / "runs" / key)

            say(f"{key}: classify jobs on {count} and {2 * count} images")
            jobs = {
                images: _fastest(
                    [
                        product_job(
                            model, models[model], tree, links,
                            work / "runs" / key / f"job-{images}-{attempt}",
                        )  # fmt: skip
                        for attempt in repeats
                    ],
                    JOB_FIXED,
                )
                for images, (tree, links) in trees.items()
            }
            figures["job"] = marginal(count, jobs[count], jobs[2 * count], JOB_FIXED)
            figures["job"]["parts_n"] = jobs[count]
            figures["job"]["parts_2n"] = jobs[2 * count]
            if model not in args.snakemake_models:
                continue

            # One chunk in both runs, so that the difference is images only.
            say(f"{key}: snakemake on {count} and {2 * count} images")
            one_chunk = {"chunk_size": 100 * count}
            runs = {
                images: _fastest(
                    [
                        _snakemake_once(
                            work / "snakemake" / key / f"{images}-{attempt}",
                            tree, model, models[model], one_chunk,
                        )  # fmt: skip
                        for attempt in repeats
                    ]
                )
                for images, (tree, _) in trees.items()
            }
            figures["snakemake"] = marginal(count, runs[count], runs[2 * count])
            figures["snakemake"]["chunks"] = [run["chunks"] for run in runs.values()]
            # Snakemake's start-up varies by about a second from run to run, as
            # much as the extra images take: its classify jobs' logs are steadier.
            extra = runs[2 * count]["classify_s"] - runs[count]["classify_s"]
            figures["snakemake"]["in_job_images_per_s"] = count / extra

            # The default configuration: a job, with its start-up, per chunk.
            # On the small photos, also larger chunks, and no workflow profile.
            images = args.workflow_images
            tree = work / "trees" / f"{size_name}-workflow-{images}"
            benchkit.link_tree(distinct, tree, images, per_folder=images // 2)
            variants = {"default": ({}, ())}
            if size_name == "640x480":
                variants["chunk_size 5000"] = ({"chunk_size": 5000}, ())
                # Without profiles/default, each `run:` job is a Snakemake
                # process of its own.
                variants["default, --workflow-profile none"] = (
                    {},
                    ("--workflow-profile", "none"),
                )
            figures["workflow"] = {}
            for index, (label, (config, extra)) in enumerate(variants.items()):
                say(f"{key}: snakemake, {label}, {images} images in 2 folders")
                run = _snakemake_once(
                    work / "snakemake" / key / f"workflow-{index}",
                    tree, model, models[model], config, *extra,
                )  # fmt: skip
                run["images"] = images
                run["images_per_s"] = images / run["wall_s"]
                figures["workflow"][label] = run

        if args.torch_python:
            say(f"peer {size_name}: torchvision on {count} and {2 * count} images")
            peer_work = work / "runs" / f"peer {size_name}"
            # On large photos the peer's runs are long enough to need no repeat.
            peer_repeats = repeats if size_name == "640x480" else range(1)
            peers = {
                images: _fastest(
                    [
                        peer_run(
                            args.torch_python, links,
                            peer_work / f"{images}-{attempt}",
                            args.batches if images == count and attempt == 0 else 0,
                        )  # fmt: skip
                        for attempt in peer_repeats
                    ],
                    PEER_FIXED,
                )
                for images, (_, links) in trees.items()
            }
            peer = marginal(count, peers[count], peers[2 * count], PEER_FIXED)
            model_only = json.loads(
                (peer_work / f"{count}-0" / "peer.json").read_text()
            )
            peer["model_only_images_per_s"] = model_only["model_only_images_per_s"]
            peer["model_only_cpu_ms_per_image"] = model_only[
                "model_only_cpu_ms_per_image"
            ]
            peer["parts_n"] = peers[count]
            report["throughput"][f"peer {size_name}"] = peer


def measure_agreement(args, work: Path, models: dict, report: dict) -> None:
    """Draft-mode against full decoding, with the real EfficientNet-Lite0."""
    say("draft-mode agreement on real photos")
    photos = real_photos()
    files = [
        photo
        for photo in photos
        if photo.suffix == ".jpg" and min(Image.open(photo).size) >= 512
    ]
    per_size = max(1, args.agreement // len(AGREEMENT_SIZES))
    for index, size in enumerate(AGREEMENT_SIZES):
        files += benchkit.make_jpegs(
            photos,
            work / "agreement" / f"{size[0]}x{size[1]}",
            size,
            per_size,
            seed=100 + index,
        )
    spec = {
        "model": "efficientnet_lite0",
        "model_path": str(models["efficientnet_lite0"]),
        "files": [str(path) for path in files],
    }
    report["agreement"] = run_role("agreement", spec, work / "runs" / "agreement")
    report["agreement"]["photos"] = len(photos)


def measure_memory(args, work: Path, models: dict, report: dict) -> None:
    """Peak RSS of classify jobs on a small and a large number of images."""
    distinct = benchkit.make_jpegs(
        bundled_photos(), work / "photos" / "640x480", SIZES["640x480"], args.distinct
    )
    report["memory"] = {}
    for count in args.memory:
        say(f"peak RSS of a classify job on {count} images")
        tree = work / "trees" / f"memory-{count}"
        links = benchkit.link_tree(distinct, tree, count, per_folder=100)
        job = product_job(
            "googlenet",
            models["googlenet"],
            tree,
            links,
            work / "runs" / f"mem-{count}",
        )
        job["images_per_s"] = count / job["classify_s"]
        report["memory"][str(count)] = job


def _common_smk_profile(workdir: Path, overrides: Path) -> dict:
    """Profiles a dry run; returns the cumulative time of common.smk's parts."""
    stats_path = workdir / "dry_run.prof"
    command = snakemake_command(workdir, overrides, "-n")
    command[1:3] = ["-m", "cProfile", "-o", str(stats_path), "-m", "snakemake"]
    subprocess.run(command, capture_output=True, env=_environment(), check=True)
    stats = pstats.Stats(str(stats_path))
    parts = {"total_s": max(row[3] for row in stats.stats.values())}
    for (filename, _, function), row in stats.stats.items():
        if filename.endswith("common.smk") and function != "<module>":
            parts[function] = parts.get(function, 0.0) + row[3]
        elif filename.endswith("discover.py") and function == "find_images":
            parts["discover.find_images"] = row[3]
    return parts


def measure_scale(args, work: Path, models: dict, report: dict) -> None:
    """Dry run and nothing-to-do rerun on many folders of zero-byte .jpg files."""
    from concepts_extraction import jsonio
    from concepts_extraction.classify import ChunkResult, save_chunk

    folders, per_folder = args.scale
    say(f"scale: {folders} folders of {per_folder} files")
    tree = work / "scale" / f"tree-{folders}x{per_folder}"
    if not tree.exists():
        partial = tree.with_name(f".{tree.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        for folder in range(folders):
            (partial / f"f{folder:04d}").mkdir(parents=True)
            for image in range(per_folder):
                (partial / f"f{folder:04d}" / f"{image:03d}.jpg").touch()
        partial.rename(tree)
    workdir = work / "scale" / "workdir"
    overrides = prepare_workdir(workdir, tree, "googlenet", models["googlenet"])
    scale = {"folders": folders, "images": folders * per_folder}

    dry = snakemake_run(workdir, overrides, "-n")
    scale["dry_run_s"] = dry["wall_s"]
    scale["dry_run_others_cores"] = dry["others_cores"]
    scale["dry_run_profile"] = _common_smk_profile(workdir, overrides)

    # Bring the tree up to date. Zero-byte files are rejected by validation,
    # so every classify job would only record the rejections: those chunks are
    # written here with save_chunk, which is what the job would write, instead
    # of starting TensorFlow in 1,000 jobs. `run:` rules execute in threads.
    began = time.perf_counter()
    snakemake_run(
        workdir, overrides, "--force-use-threads", "--until", "validate_images"
    )
    classify_dir = workdir / "results" / "classify" / "googlenet"
    for validated in glob.glob(str(workdir / "results" / "validate" / "*" / "*.json")):
        result = ChunkResult()
        for row in jsonio.read_json(validated):
            result.rejected[row["path"]] = row["reason"]
        folder, chunk = Path(validated).parent.name, Path(validated).stem
        save_chunk(classify_dir / folder / f"{chunk}.npz", result)
    snakemake_run(workdir, overrides, "--force-use-threads")
    scale["setup_s"] = time.perf_counter() - began

    rerun = snakemake_run(workdir, overrides)
    scale["rerun_s"] = rerun["wall_s"]
    scale["rerun_others_cores"] = rerun["others_cores"]
    scale["rerun_nothing_to_do"] = "Nothing to be done" in rerun["output"]
    dry = snakemake_run(workdir, overrides, "-n")
    scale["rerun_dry_run_s"] = dry["wall_s"]

    # One edited image: the cost of a `run:` job spawned as its own Snakemake
    # process, which rescans the tree, against the same job in a thread.
    modes = (
        ("process", ("--workflow-profile", "none")),
        ("thread", ("--force-use-threads",)),
    )
    for mode, extra in modes:
        (tree / "f0000" / "000.jpg").touch()
        run = snakemake_run(workdir, overrides, "--until", "discover_images", *extra)
        scale[f"one_discover_job_{mode}_s"] = run["wall_s"]
    report["scale"] = scale


# ---------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value:7.1f}" if value == value else "    n/a"


def print_tables(report: dict) -> None:
    """Prints the figures and the ratios as Markdown tables."""
    throughput = report["throughput"]
    nan = float("nan")
    print("\n## Throughput (images/s; start-up in s; CPU in ms per image)\n")
    print(
        "| model, images | model-only | job e2e | job start-up | snakemake e2e "
        "| snakemake, in its job | snakemake start-up | naive | CPU model-only "
        "| CPU job | others' load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, figures in throughput.items():
        if key.startswith("peer"):
            continue
        probe, job = figures["probe"], figures["job"]
        snake = figures.get("snakemake", {})
        load = max(
            probe["model_only_others_cores"], job["others_cores"],
            snake.get("others_cores", 0.0),
        )  # fmt: skip
        print(
            f"| {key} | {_rate(probe['model_only_images_per_s'])} "
            f"| {_rate(job['images_per_s'])} | {job['startup_s']:.1f} "
            f"| {_rate(snake.get('images_per_s', nan))} "
            f"| {_rate(snake.get('in_job_images_per_s', nan))} "
            f"| {snake.get('startup_s', nan):.1f} "
            f"| {_rate(probe['naive_images_per_s'])} "
            f"| {probe['model_only_cpu_ms_per_image']:.1f} "
            f"| {job['cpu_ms_per_image']:.1f} | {load:.2f} cores |"
        )
    for key, peer in throughput.items():
        if key.startswith("peer"):
            print(
                f"| {key} | {_rate(peer['model_only_images_per_s'])} "
                f"| {_rate(peer['images_per_s'])} | {peer['startup_s']:.1f} "
                f"| | | | | {peer['model_only_cpu_ms_per_image']:.1f} "
                f"| {peer['cpu_ms_per_image']:.1f} | {peer['others_cores']:.2f} cores |"
            )

    print("\n## Ratios\n")
    print("| model, images | job / model-only | snakemake / model-only "
          "| job / peer | snakemake / peer | job / naive |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for key, figures in throughput.items():
        if key.startswith("peer"):
            continue
        size = key.split()[-1]
        peer = throughput.get(f"peer {size}", {}).get("images_per_s", nan)
        job = figures["job"]["images_per_s"]
        ceiling = figures["probe"]["model_only_images_per_s"]
        snake = figures.get("snakemake", {}).get("images_per_s", nan)
        naive = figures["probe"]["naive_images_per_s"]
        print(
            f"| {key} | {job / ceiling:.2f} | {snake / ceiling:.2f} "
            f"| {job / peer:.2f} | {snake / peer:.2f} | {job / naive:.2f} |"
        )

    print("\n## Whole Snakemake runs on two folders, everything included\n")
    print("| model, images | images | chunks | wall | images/s | / model-only |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, figures in throughput.items():
        ceiling = figures.get("probe", {}).get("model_only_images_per_s", nan)
        for label, run in figures.get("workflow", {}).items():
            print(
                f"| {key}, {label} | {run['images']} | {run['chunks']} "
                f"| {run['wall_s']:.1f} s | {run['images_per_s']:.1f} "
                f"| {run['images_per_s'] / ceiling:.2f} |"
            )

    print("\n## Decoding, one thread (ms per image, load_image)\n")
    print("| images | mean file | draft | draft, bare minimum | full |")
    print("|---|---:|---:|---:|---:|")
    for key, figures in throughput.items():
        if key.startswith("googlenet"):
            size = key.split()[-1]
            probe = figures["probe"]
            print(
                f"| {size} | {report['photos'][size]['mean_file_kib']:.0f} KiB "
                f"| {probe['decode_draft_ms']:.1f} | {probe['decode_draft_minimum_ms']:.1f} "
                f"| {probe['decode_full_ms']:.1f} |"
            )

    if "agreement" in report:
        agreement = report["agreement"]
        print(
            f"\n## Draft mode: {agreement['images']} JPEGs from "
            f"{agreement['photos']} real photos, EfficientNet-Lite0\n"
        )
        print(
            "| decoding | top-1 = full | top-1 = full, margin >= 0.05 "
            f"({agreement['confident_images']} images) | top-5 overlap "
            "| largest probability change | decode, one thread |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for name in AGREEMENT_VARIANTS:
            row = agreement[name]
            print(
                f"| {name} | {100 * row['top1_agreement']:.1f}% "
                f"| {100 * row['top1_agreement_confident']:.1f}% "
                f"| {100 * row['top5_overlap']:.1f}% "
                f"| {row['max_probability_difference']:.3f} "
                f"| {row['decode_ms']:.1f} ms |"
            )
    if "memory" in report:
        print("\n## Peak RSS of a classify job (GoogLeNet, 640x480)\n")
        print("| images | peak RSS | of which the output's probabilities | rate |")
        print("|---:|---:|---:|---:|")
        for count, job in report["memory"].items():
            output_mib = int(count) * 1000 * 4 / 2**20
            print(
                f"| {count} | {job['peak_rss_mib']:.0f} MiB | {output_mib:.0f} MiB "
                f"| {job['images_per_s']:.1f} images/s |"
            )
    if "scale" in report:
        scale = report["scale"]
        print(f"\n## Scale: {scale['folders']} folders, {scale['images']} files\n")
        for key, value in scale.items():
            if key.endswith("_s"):
                print(f"- {key}: {value:.1f}")
        print(f"- rerun reports nothing to do: {scale['rerun_nothing_to_do']}")
        profile = scale["dry_run_profile"]
        print("- dry run under cProfile, cumulative seconds:")
        for key, value in sorted(profile.items(), key=lambda item: -item[1]):
            print(f"  - {key}: {value:.1f}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, ~7 min")
    parser.add_argument(
        "--workdir", type=Path, default=REPO / "benchmarks" / "work" / "throughput"
    )
    parser.add_argument(
        "--torch-python",
        default=str(REPO / "benchmarks" / "work" / "torchvenv" / "bin" / "python"),
        help="Python of the venv with torch and torchvision; '' skips the peer",
    )
    parser.add_argument(
        "--parts",
        default="throughput,agreement,memory,scale",
        help="comma-separated parts to run",
    )
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated models"
    )
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    full = not args.quick
    args.images = 250 if full else 64
    args.distinct = 48 if full else 16
    args.batches = 12 if full else 3
    args.naive = 48 if full else 12
    args.agreement = 250 if full else 40
    args.repeats = 2 if full else 1
    args.workflow_images = 1000 if full else 200
    args.memory = (1000, 20000) if full else (200, 2000)
    args.scale = (1000, 100) if full else (200, 100)
    args.models = tuple(args.models.split(","))
    args.snakemake_models = ("googlenet",)
    if args.torch_python and not Path(args.torch_python).exists():
        print(f"No peer: {args.torch_python} does not exist", file=sys.stderr)
        args.torch_python = ""
    return args


def main(argv=None) -> int:
    """Runs the benchmark, or one of its roles in a child process."""
    args = parse_args(argv)
    if args.role:
        spec = json.loads(Path(args.spec).read_text())
        figures = ROLES[args.role](spec)
        Path(args.spec.replace(".spec.json", ".out.json")).write_text(
            json.dumps(figures)
        )
        return 0

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    report = {
        "quick": args.quick,
        "machine": benchkit.machine_info(args.torch_python),
        "photos": {},
        "throughput": {},
    }
    say("preparing the models")
    models = prepare_models(work)
    parts = args.parts.split(",")
    if "throughput" in parts:
        measure_throughput(args, work, models, report)
    if "agreement" in parts:
        measure_agreement(args, work, models, report)
    if "memory" in parts:
        measure_memory(args, work, models, report)
    if "scale" in parts:
        measure_scale(args, work, models, report)
    report["machine"]["load_average_end"] = os.getloadavg()
    report["total_s"] = time.perf_counter() - START

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = work / f"report-{stamp}.json"
    out.write_text(json.dumps(report, indent=1))
    say(f"wrote {out}")
    print(json.dumps(report["machine"], indent=1))
    print_tables(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
