#!/usr/bin/env bash
# Run the workflow through SLURM on a one-node cluster on localhost and check
# that its JSON equals the JSON of a local run on the same tree.
#
# Usage: tests/slurm/run_test.sh [PYTHON]   (default: .venv/bin/python)
# The Python must have the project installed with the `slurm` extra.

set -Eeuo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${1:-$REPO/.venv/bin/python}
WORK=$(mktemp -d /tmp/concepts-slurm-test.XXXXXX)
CLUSTER=$REPO/tests/slurm/cluster.sh

cleanup() {
    "$CLUSTER" stop || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# A tree of 3 folders; chunk_size 2 splits them into chunks of one image.
mkdir -p "$WORK/photos"
cp -r "$REPO/example/photos/." "$WORK/photos/"
CONFIG=(input_dir="$WORK/photos" model=efficientnet_lite0 num_concepts=5 chunk_size=2)

echo "== local run"
mkdir -p "$WORK/local"
"$PYTHON" -m snakemake -s "$REPO/Snakefile" -d "$WORK/local" --cores 2 \
    --config "${CONFIG[@]}" >"$WORK/local.out" 2>&1 || {
    tail -40 "$WORK/local.out"
    exit 1
}

echo "== SLURM run"
"$CLUSTER" start
eval "$("$CLUSTER" env)"
mkdir -p "$WORK/slurm"
started=$(date +%s)
# Snakemake ignores SIGTERM while it waits for SLURM jobs; SIGINT cancels them.
timeout -s INT 900 "$PYTHON" -m snakemake -s "$REPO/Snakefile" -d "$WORK/slurm" \
    --profile "$REPO/profiles/slurm" \
    --slurm-init-seconds-before-status-checks 1 \
    --slurm-keep-successful-logs \
    --config "${CONFIG[@]}" >"$WORK/slurm.out" 2>&1 || {
    tail -60 "$WORK/slurm.out"
    exit 1
}
echo "SLURM run took $(($(date +%s) - started)) s"

echo "== jobs that went through SLURM"
# The plugin names each job after the run and puts the rule in its comment.
sacct -X -n -P -o Comment,State | tee "$WORK/sacct.txt"

"$PYTHON" - "$WORK" <<'PYTHON'
import json
import math
import pathlib
import sys

from concepts_extraction.discover import find_images, split_chunks

work = pathlib.Path(sys.argv[1])
images, _ = find_images(work / "photos")
expected = len(split_chunks(images, 2).groupby(["folder_id", "chunk"]))
local = json.loads((work / "local/results/concepts.json").read_text())
slurm = json.loads((work / "slurm/results/concepts.json").read_text())

jobs = [line.split("|") for line in (work / "sacct.txt").read_text().splitlines()]
classify = [state for name, state in jobs if name.startswith("rule_classify")]
assert len(classify) == expected, f"expected {expected} classify jobs: {jobs}"
assert all(state == "COMPLETED" for state in classify), jobs
assert not any(name.startswith("rule_aggregate") for name, _ in jobs), jobs

assert local.keys() == slurm.keys()
assert local["rejected"] == slurm["rejected"]
assert local["summary"] == slurm["summary"]
assert local["images"].keys() == slurm["images"].keys()
for path, concepts in local["images"].items():
    others = slurm["images"][path]
    assert [c["wnid"] for c in concepts] == [c["wnid"] for c in others], path
    for mine, theirs in zip(concepts, others):
        assert math.isclose(mine["probability"], theirs["probability"], abs_tol=1e-5)

logs = list((work / "slurm/.snakemake/slurm_logs/rule_classify").rglob("*.log"))
assert logs, "no SLURM job logs for classify"
for log in logs:
    assert "Scanning the input folder" not in log.read_text(), log

print(f"OK: {len(local['images'])} images, {len(classify)} classify jobs on SLURM")
PYTHON
