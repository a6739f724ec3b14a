"""The concepts_extraction command with the old tool's flags."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from concepts_extraction.cli import parse_args

from workflow import REPO


@pytest.fixture
def cli_env(tmp_path, efficientnet_model):
    """An environment whose model cache already contains the converted EfficientNet."""
    cache = tmp_path / "cache"
    resources = cache / "concepts_extraction" / "resources"
    resources.mkdir(parents=True)
    shutil.copy(efficientnet_model, resources / "efficientnet_lite0.keras")
    return {**os.environ, "XDG_CACHE_HOME": str(cache)}


def run_cli(*args, env, cwd):
    command = [sys.executable, "-m", "concepts_extraction.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)


def test_parse_old_flags():
    args = parse_args(["-n", "20", "-p", "photos", "-j", "out.json"])

    assert args.num_concepts == 20
    assert args.input_path == "photos"
    assert args.out_json == "out.json"
    assert args.model == "googlenet"


def test_parse_long_flags():
    args = parse_args(["--num_concepts", "3", "--image", "a.jpg", "--out_json", "o"])

    assert (args.num_concepts, args.image, args.out_json) == (3, "a.jpg", "o")


def test_parse_requires_source(capsys):
    with pytest.raises(SystemExit):
        parse_args(["-n", "5"])


def test_parse_rejects_both_sources():
    with pytest.raises(SystemExit):
        parse_args(["-p", "d", "-i", "a.jpg"])


def test_parse_rejects_zero_concepts(capsys):
    with pytest.raises(SystemExit):
        parse_args(["-n", "0", "-p", "d"])

    assert "Received: 0" in capsys.readouterr().err


def test_single_image_to_stdout(cli_env, tmp_path):
    image = REPO / "example/photos/objects/coffee.jpg"

    completed = run_cli(
        "-n", 3, "-i", image, "--model", "efficientnet_lite0", env=cli_env, cwd=tmp_path
    )

    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert document["num_concepts"] == 3
    assert document["images"]["coffee.jpg"][0]["concept"] == "espresso"
    assert len(document["images"]["coffee.jpg"]) == 3


def test_single_image_rejected_exit_zero(cli_env, tmp_path):
    image = REPO / "example/photos/objects/camera.png"

    completed = run_cli(
        "-i", image, "--model", "efficientnet_lite0", env=cli_env, cwd=tmp_path
    )

    assert completed.returncode == 0, completed.stderr
    assert "1 channel" in json.loads(completed.stdout)["rejected"]["camera.png"]


def test_single_image_convert_grayscale(cli_env, tmp_path):
    image = REPO / "example/photos/objects/camera.png"

    completed = run_cli(
        "-i", image, "--model", "efficientnet_lite0", "--non-rgb", "convert",
        env=cli_env, cwd=tmp_path,
    )  # fmt: skip

    document = json.loads(completed.stdout)
    assert list(document["images"]) == ["camera.png"]
    assert document["converted"] == {"camera.png": "L"}


def test_missing_image_exit_one(cli_env, tmp_path):
    completed = run_cli("-i", tmp_path / "absent.jpg", env=cli_env, cwd=tmp_path)

    assert completed.returncode == 1
    assert "absent.jpg" in completed.stderr


def test_folder_through_workflow(cli_env, tmp_path, photo_tree):
    out = tmp_path / "out.json"
    command = ["-n", 2, "-p", photo_tree, "-j", out, "--model", "efficientnet_lite0"]

    completed = run_cli(*command, "--cores", 2, env=cli_env, cwd=tmp_path)

    assert completed.returncode == 0, completed.stderr
    document = json.loads(out.read_text())
    assert len(document["images"]) == 5
    assert document["images"]["objects/coffee.jpg"][0]["concept"] == "espresso"
    assert "Classified 5 images, rejected 1, skipped 0" in completed.stderr

    # A second run with another N reuses the cached classification.
    rerun = run_cli("-n", 4, *command[2:], env=cli_env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "rule classify" not in rerun.stderr
    assert len(json.loads(out.read_text())["images"]["space/rocket.jpg"]) == 4


def test_folder_missing_exit_one(cli_env, tmp_path):
    completed = run_cli("-p", tmp_path / "absent", env=cli_env, cwd=tmp_path)

    assert completed.returncode == 1
    assert "absent does not exist or is not a folder" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert "--unlock" not in completed.stderr
    assert not (tmp_path / "cache" / "concepts_extraction" / "runs").exists()


def test_folder_is_file_exit_one(cli_env, tmp_path, photo_tree):
    image = photo_tree / "objects" / "coffee.jpg"

    completed = run_cli("-p", image, env=cli_env, cwd=tmp_path)

    assert completed.returncode == 1
    assert "coffee.jpg does not exist or is not a folder" in completed.stderr


def test_killed_run_lock_hint(cli_env, tmp_path, photo_tree):
    workdir = tmp_path / "work"
    command = [
        sys.executable, "-m", "concepts_extraction.cli", "-p", photo_tree,
        "--model", "efficientnet_lite0", "--workdir", workdir, "--cores", 1,
    ]  # fmt: skip
    locks = workdir / ".snakemake" / "locks"
    with subprocess.Popen(
        list(map(str, command)),
        env=cli_env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    ) as killed:
        deadline = time.monotonic() + 120
        while not any(locks.glob("*")) and killed.poll() is None:
            assert time.monotonic() < deadline, "the run never locked its folder"
            time.sleep(0.05)
        assert killed.poll() is None, "the run ended before it could be killed"
        os.killpg(killed.pid, signal.SIGKILL)

    locked = run_cli(*command[3:], env=cli_env, cwd=tmp_path)
    assert locked.returncode == 1
    assert "run the same command again with --unlock" in locked.stderr

    unlocked = run_cli(*command[3:], "--unlock", env=cli_env, cwd=tmp_path)
    assert unlocked.returncode == 0, unlocked.stderr
    assert "Classified 5 images" in unlocked.stderr


def test_parse_rejects_zero_cores(capsys):
    with pytest.raises(SystemExit):
        parse_args(["-p", "d", "--cores", "0"])

    assert "Received: 0" in capsys.readouterr().err


def test_output_folder_fails_before_run(cli_env, tmp_path, photo_tree):
    completed = run_cli(
        "-p", photo_tree, "-j", tmp_path, "--model", "efficientnet_lite0",
        env=cli_env, cwd=tmp_path,
    )  # fmt: skip

    assert completed.returncode == 1
    assert "must name a file" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert "rule classify" not in completed.stderr


def test_output_image_name_rejected(cli_env, tmp_path, photo_tree):
    image = photo_tree / "objects" / "coffee.jpg"
    before = image.read_bytes()

    completed = run_cli("-p", photo_tree, "-j", image, env=cli_env, cwd=tmp_path)

    assert completed.returncode == 1
    assert "names the image file" in completed.stderr
    assert image.read_bytes() == before


def test_output_same_as_image_rejected(cli_env, tmp_path, photo_tree):
    image = tmp_path / "coffee.json"
    shutil.copy(photo_tree / "objects" / "coffee.jpg", image)
    before = image.read_bytes()

    completed = run_cli("-i", image, "-j", image, env=cli_env, cwd=tmp_path)

    assert completed.returncode == 1
    assert "-j and -i name the same file" in completed.stderr
    assert image.read_bytes() == before


def test_parse_rejects_empty_path(capsys):
    with pytest.raises(SystemExit):
        parse_args(["-p", ""])

    assert "-p must name a path" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_output_unwritable_fails_before_run(cli_env, tmp_path, photo_tree):
    completed = run_cli(
        "-p", photo_tree, "-j", "/proc/out.json", "--model", "efficientnet_lite0",
        env=cli_env, cwd=tmp_path,
    )  # fmt: skip

    assert completed.returncode == 1
    assert "/proc/out.json cannot be written" in completed.stderr
    assert "rule classify" not in completed.stderr


def test_output_missing_parent(cli_env, tmp_path, photo_tree):
    out = tmp_path / "absent" / "out.json"

    completed = run_cli("-p", photo_tree, "-j", out, env=cli_env, cwd=tmp_path)

    assert completed.returncode == 1
    assert "does not exist" in completed.stderr
    assert not out.parent.exists()


def test_offline_googlenet_message_on_terminal(cli_env, tmp_path, photo_tree):
    completed = run_cli(
        "-p", photo_tree, "--model-handle", "http://127.0.0.1:9/model.tar.gz",
        env=cli_env, cwd=tmp_path,
    )  # fmt: skip

    assert completed.returncode == 1
    assert "no internet access" in completed.stderr
    assert "efficientnet_lite0" in completed.stderr
