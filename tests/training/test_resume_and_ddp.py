"""Exact resume after SIGKILL, and 2-process DDP against 1 process, in real subprocesses."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lstmkit.training.checkpoint import read_checkpoint_state

SCRIPT = Path(__file__).parent / "scripts" / "train_toy.py"


def _run(*args: str, timeout: float = 120) -> None:
    subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        check=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
    _run("--run-dir", str(tmp_path / "straight"), "--dropout", "--out", str(tmp_path / "a.st"))

    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.safetensors"
    child = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--run-dir",
            str(run_dir),
            "--dropout",
            "--slow",
            "0.05",
            "--out",
            str(tmp_path / "unused.st"),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:  # wait for a checkpoint in the middle of epoch 1
            if last.exists():
                position = read_checkpoint_state(last)["position"]
                if position["epoch"] == 1 and position["batch"] >= 5:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the training subprocess never wrote a mid-epoch checkpoint")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed_at = read_checkpoint_state(last)["position"]
    assert killed_at["epoch"] == 1 and 0 < killed_at["batch"] < 16  # mid-epoch

    _run("--run-dir", str(run_dir), "--dropout", "--resume", "--out", str(tmp_path / "b.st"))
    straight, resumed = load_file(tmp_path / "a.st"), load_file(tmp_path / "b.st")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun is not installed next to this Python",
)
def test_two_process_ddp_matches_one_process(tmp_path):
    common = ["--optim", "sgd", "--epochs", "1", "--batch-size", "32", "--checkpoint-every", "0"]
    _run(*common, "--out", str(tmp_path / "single.st"))
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            str(SCRIPT),
            *common,
            "--out",
            str(tmp_path / "ddp.st"),
        ],
        check=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    single, ddp = load_file(tmp_path / "single.st"), load_file(tmp_path / "ddp.st")
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], atol=1e-5, rtol=1e-5)
