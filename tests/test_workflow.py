"""Real Snakemake runs of the whole workflow on temporary trees."""

import json
import subprocess
import sys

import jsonschema
import pytest

from workflow import REPO, prepare_workdir, run_snakemake

CAT_WNIDS = {"n02123045", "n02123159", "n02123394", "n02123597", "n02124075"}
SCHEMA = json.loads((REPO / "workflow/schemas/concepts.schema.json").read_text())


@pytest.fixture(scope="module")
def efficientnet_run(tmp_path_factory, efficientnet_model):
    """One efficientnet_lite0 run on a copy of the example photos, N=5."""
    workdir = prepare_workdir(tmp_path_factory.mktemp("run"), efficientnet_model)
    photos = workdir / "photos"
    import shutil

    shutil.copytree(REPO / "example" / "photos", photos)
    # A relative input_dir resolves against the working directory.
    config = {"input_dir": "photos", "model": "efficientnet_lite0", "num_concepts": 5}
    run_snakemake(workdir, config)
    return workdir, config


def test_run_output_matches_schema(efficientnet_run):
    workdir, _ = efficientnet_run
    document = json.loads((workdir / "results/concepts.json").read_text())

    jsonschema.validate(document, SCHEMA)


def test_run_accounts_every_photo(efficientnet_run):
    workdir, _ = efficientnet_run
    document = json.loads((workdir / "results/concepts.json").read_text())

    assert sorted(document["images"]) == [
        "animals/chelsea.jpg",
        "objects/coffee.jpg",
        "space/astronaut.jpg",
        "space/hubble_deep_field.jpg",
        "space/rocket.jpg",
    ]
    assert document["rejected"] == {
        "objects/camera.png": "1 channel (grayscale, L), expected 3. Set non_rgb: "
        "convert (--non-rgb convert) to convert it to RGB"
    }
    assert document["summary"]["classified"] == 5
    assert document["summary"]["rejected"] == 1


def test_run_golden_concepts(efficientnet_run):
    workdir, _ = efficientnet_run
    images = json.loads((workdir / "results/concepts.json").read_text())["images"]

    chelsea = [concept["wnid"] for concept in images["animals/chelsea.jpg"][:3]]
    assert CAT_WNIDS & set(chelsea)
    assert images["objects/coffee.jpg"][0]["concept"] == "espresso"
    for concepts in images.values():
        assert len(concepts) == 5
        probabilities = [concept["probability"] for concept in concepts]
        assert probabilities == sorted(probabilities, reverse=True)


def test_run_writes_logs_per_rule(efficientnet_run):
    workdir, _ = efficientnet_run

    for rule in ["discover_images", "validate_images", "classify", "aggregate_folder"]:
        assert list((workdir / "logs" / rule).rglob("*.log")), rule
    summary = (workdir / "logs/aggregate_concepts/aggregate.log").read_text()
    assert "Classified 5 images, rejected 1, skipped 0" in summary


def test_run_nothing_to_do_twice(efficientnet_run):
    workdir, config = efficientnet_run

    completed = run_snakemake(workdir, config, "--dry-run")

    assert "Nothing to be done" in completed.stdout + completed.stderr


def test_googlenet_download_and_alignment(tmp_path, photo_tree, model_server):
    workdir = prepare_workdir(tmp_path / "work")
    config = {
        "input_dir": str(photo_tree),
        "model": "googlenet",
        "googlenet_handle": f"{model_server}/model.tar.gz",
        "num_concepts": 3,
    }

    run_snakemake(workdir, config)

    assert (workdir / "resources/googlenet/saved_model.pb").is_file()
    document = json.loads((workdir / "results/concepts.json").read_text())
    assert document["model"] == "googlenet"
    assert len(document["images"]) == 5
    for concepts in document["images"].values():
        # The stand-in's background logit is the largest; only tabby or goldfish
        # may come first once it is dropped.
        assert concepts[0]["wnid"] in {"n02123045", "n01443537"}


def test_googlenet_download_failure_message(tmp_path, photo_tree):
    workdir = prepare_workdir(tmp_path / "work")
    config = {
        "input_dir": str(photo_tree),
        "googlenet_handle": "http://127.0.0.1:9/model.tar.gz",
    }

    completed = run_snakemake(workdir, config, check=False)

    assert completed.returncode != 0
    log = (workdir / "logs/download_googlenet/download.log").read_text()
    assert "efficientnet_lite0" in log
    assert "resources/googlenet" in log


def test_invalid_config_names_key(tmp_path, photo_tree):
    workdir = prepare_workdir(tmp_path / "work")

    completed = run_snakemake(
        workdir, {"input_dir": str(photo_tree), "num_concepts": 0}, check=False
    )

    assert completed.returncode != 0
    assert "num_concepts" in completed.stderr


def test_lint_reports_nothing(tmp_path, photo_tree):
    workdir = prepare_workdir(tmp_path / "work")

    completed = run_snakemake(workdir, {"input_dir": str(photo_tree)}, "--lint")

    assert "Lints for" not in completed.stdout + completed.stderr


def test_snakefmt_clean():
    files = [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]

    completed = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *map(str, files)],
        capture_output=True,
        text=True,
    )

    assert completed.returncode == 0, completed.stderr


def test_other_workdir_uses_shipped_config(tmp_path, photo_tree):
    # No config/config.yaml in the working directory: the shipped defaults apply,
    # and a relative input_dir resolves against the working directory.
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(tmp_path),
        "--cores", "1", "--dry-run",
        "--config", f"input_dir={photo_tree.name}", "model=efficientnet_lite0",
    ]  # fmt: skip

    completed = subprocess.run(command, capture_output=True, text=True)

    assert completed.returncode == 0, completed.stderr
    assert "classify" in completed.stdout
    assert "convert_efficientnet" in completed.stdout
