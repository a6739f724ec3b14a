"""What a rerun redoes: real Snakemake runs on a small tree of three folders.

With chunks of at most four images, the "space" folder has two chunks. After a
change, a dry run lists the jobs that Snakemake plans, which must be those of
the chunks whose list of images changed (as the package splits them), plus
the aggregation of their folder. Each test then puts the tree back, or runs
the workflow, so that the next one starts from a tree that is up to date.
"""

import json
import os
import re
import shutil

import pytest
from PIL import Image

from concepts_extraction.discover import find_images, folder_id, split_chunks
from workflow import REPO, prepare_workdir, run_snakemake

pytestmark = pytest.mark.slow

PHOTOS = REPO / "example" / "photos"
TREE = {
    "animals": ["chelsea.jpg", "coffee.jpg"],
    "objects": ["camera.png", "coffee.jpg"],
    "space": ["astronaut.jpg", "hubble_deep_field.jpg", "rocket.jpg"],
}
CONFIG = {"model": "efficientnet_lite0", "chunk_size": 4, "num_concepts": 5}
JOB = re.compile(r"^(?:local)?rule (\w+):$")
AGGREGATION = {("aggregate_concepts", None, None)}


def _find(name: str):
    return next(PHOTOS.rglob(name))


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory, efficientnet_model):
    """A workdir whose tree has been classified once, and its config."""
    workdir = prepare_workdir(tmp_path_factory.mktemp("reruns"), efficientnet_model)
    for folder, names in TREE.items():
        (workdir / "tree" / folder).mkdir(parents=True)
        for name in names:
            shutil.copy2(_find(name), workdir / "tree" / folder / name)
    config = {**CONFIG, "input_dir": str(workdir / "tree")}
    run_snakemake(workdir, config)
    return workdir, config


def planned_jobs(workdir, config) -> set[tuple[str, str | None, str | None]]:
    """The (rule, folder, chunk) of every job that a dry run plans, but `all`."""
    completed = run_snakemake(workdir, config, "--dry-run")
    blocks = []
    for line in (completed.stdout + completed.stderr).splitlines():
        match = JOB.match(line)
        if match:
            blocks.append((match.group(1), {}))
        elif blocks and line.strip().startswith("wildcards:"):
            items = line.split(":", 1)[1].strip().split(", ")
            blocks[-1][1].update(item.split("=", 1) for item in items)
    return {
        (rule, wildcards.get("folder"), wildcards.get("chunk"))
        for rule, wildcards in blocks
        if rule != "all"
    }


def chunk_listing(workdir) -> dict[tuple[str, str], list]:
    """The images of each (folder id, chunk id), as the workflow splits the tree."""
    images, _ = find_images(workdir / "tree")
    chunked = split_chunks(images, CONFIG["chunk_size"])
    listing = {}
    for row in chunked.itertuples(index=False):
        key = (row.folder_id, row.chunk)
        listing.setdefault(key, []).append((row.path, row.size, row.mtime_ns))
    return listing


def chunk_jobs(before: dict, after: dict) -> set:
    """The jobs that make the chunks that are new or hold other images now."""
    return {
        (rule, folder, chunk)
        for (folder, chunk), images in after.items()
        if before.get((folder, chunk)) != images
        for rule in ("discover_images", "validate_images", "classify")
    }


def folder_jobs(folder: str) -> set:
    """The folder's aggregation and the final merge."""
    return {("aggregate_folder", folder_id(folder), None)} | AGGREGATION


def result_times(workdir) -> dict[str, int]:
    """The modification time of every result file, by path."""
    return {
        path.relative_to(workdir).as_posix(): path.stat().st_mtime_ns
        for path in (workdir / "results").rglob("*")
        if path.is_file()
    }


def changed(before: dict, after: dict) -> set[str]:
    return {path for path in after if before.get(path) != after[path]}


def test_nothing_changed_plans_nothing(workflow_run):
    workdir, config = workflow_run

    assert planned_jobs(workdir, config) == set()


def test_num_concepts_reruns_only_aggregation(workflow_run):
    workdir, config = workflow_run
    fewer = {**config, "num_concepts": 3}
    every_folder = set().union(*(folder_jobs(folder) for folder in TREE))

    assert planned_jobs(workdir, fewer) == every_folder

    before = result_times(workdir)
    run_snakemake(workdir, fewer)
    rewritten = changed(before, result_times(workdir))
    assert rewritten == {"results/concepts.json"} | {
        f"results/folders/efficientnet_lite0/{folder_id(folder)}.json"
        for folder in TREE
    }
    document = json.loads((workdir / "results/concepts.json").read_text())
    assert {len(concepts) for concepts in document["images"].values()} == {3}

    # Going back is the same: aggregation only.
    assert planned_jobs(workdir, config) == every_folder
    run_snakemake(workdir, config)
    assert planned_jobs(workdir, config) == set()


def test_edited_image_reruns_only_its_chunk(workflow_run):
    workdir, config = workflow_run
    before = chunk_listing(workdir)
    photo = workdir / "tree" / "animals" / "chelsea.jpg"
    with Image.open(photo) as image:
        image.convert("RGB").save(photo, quality=60)
    changed_chunks = chunk_jobs(before, chunk_listing(workdir))

    assert {folder for _, folder, _ in changed_chunks} == {folder_id("animals")}
    assert planned_jobs(workdir, config) == changed_chunks | folder_jobs("animals")

    times = result_times(workdir)
    run_snakemake(workdir, config)
    animals = folder_id("animals")
    (chunk,) = {chunk for _, _, chunk in changed_chunks}
    assert changed(times, result_times(workdir)) == {
        f"results/discover/{animals}/{chunk}.json",
        f"results/validate/{animals}/{chunk}.json",
        f"results/classify/efficientnet_lite0/{animals}/{chunk}.npz",
        f"results/folders/efficientnet_lite0/{animals}.json",
        "results/concepts.json",
    }
    assert planned_jobs(workdir, config) == set()


@pytest.mark.parametrize("name", ["zz_added.jpg", "s_added.jpg"])
def test_added_image_reruns_only_the_chunk_it_joins(workflow_run, name):
    workdir, config = workflow_run
    before = chunk_listing(workdir)
    # Sorted after rocket.jpg, the new image starts a chunk of its own or joins
    # rocket's, depending on the hash of its name. The chunk of the first two
    # images stays the same either way.
    added = workdir / "tree" / "space" / name
    shutil.copy(_find("chelsea.jpg"), added)
    after = chunk_listing(workdir)
    changed_chunks = chunk_jobs(before, after)

    assert len(changed_chunks) == 3  # one chunk: discover, validate, classify
    assert {folder for _, folder, _ in changed_chunks} == {folder_id("space")}
    assert [
        key
        for key in after
        if key[0] == folder_id("space") and before.get(key) == after[key]
    ]
    assert planned_jobs(workdir, config) == changed_chunks | folder_jobs("space")

    added.unlink()
    assert planned_jobs(workdir, config) == set()


def test_deleted_image_reruns_only_its_chunk(workflow_run, tmp_path):
    workdir, config = workflow_run
    before = chunk_listing(workdir)
    photo = workdir / "tree" / "objects" / "coffee.jpg"
    backup = shutil.copy2(photo, tmp_path / "coffee.jpg")
    photo.unlink()
    changed_chunks = chunk_jobs(before, chunk_listing(workdir))

    assert {folder for _, folder, _ in changed_chunks} == {folder_id("objects")}
    assert planned_jobs(workdir, config) == changed_chunks | folder_jobs("objects")

    # copy2 keeps the modification time, so the tree is as before.
    shutil.copy2(backup, photo)
    assert planned_jobs(workdir, config) == set()


def test_deleted_chunk_reruns_only_aggregation(workflow_run, tmp_path):
    workdir, config = workflow_run
    before = chunk_listing(workdir)
    # rocket.jpg is a chunk of its own: without it, the folder's other chunk
    # is unchanged, so nothing is classified again.
    photo = workdir / "tree" / "space" / "rocket.jpg"
    backup = shutil.copy2(photo, tmp_path / "rocket.jpg")
    photo.unlink()

    assert chunk_jobs(before, chunk_listing(workdir)) == set()
    assert planned_jobs(workdir, config) == folder_jobs("space")

    shutil.copy2(backup, photo)
    assert planned_jobs(workdir, config) == set()


def test_moved_tree_reruns_nothing(workflow_run):
    workdir, config = workflow_run
    # Manifests hold paths relative to input_dir with sizes and modification
    # times, which a rename keeps; input_dir itself triggers nothing.
    moved = workdir / "moved" / "tree"
    moved.parent.mkdir()
    os.rename(workdir / "tree", moved)
    try:
        assert planned_jobs(workdir, {**config, "input_dir": str(moved)}) == set()
    finally:
        os.rename(moved, workdir / "tree")
