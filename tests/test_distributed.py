"""Several processes (torchrun, DDP; gloo on the CPU) against one: a step's loss and gradients on rank-sharded
batches equal the single-process step on the whole batch; a 2-process run equals a 1-process one and resumes with
one process; a failure on one rank ends the run with its message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from distributed_steps import CASES, one_step, worker

from weakdml import cli
from weakdml.errors import FailedOnAnotherRank

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("ddp")
    out = folder / "steps.pt"
    mp.spawn(worker, args=(2, str(folder / "init"), str(out)), nprocs=2, join=True)
    return torch.load(out)


@pytest.mark.parametrize("case", list(CASES))
def test_a_step_on_two_processes_equals_one_process_on_the_whole_batch(case: str, two_processes) -> None:
    single, sharded = one_step(case), two_processes[case]
    assert set(single) == set(sharded)
    assert abs(float(single["loss"]) - float(sharded["loss"])) < 1e-5 * max(1.0, abs(float(single["loss"])))
    moved = [name for name in single if name != "loss" and single[name].abs().sum() > 0]
    assert len(moved) >= 4  # the step trains the network
    for name in single:
        scale = max(1e-3, float(single[name].abs().max()))
        assert torch.allclose(single[name], sharded[name], rtol=1e-4, atol=1e-5 * scale), name


def test_rank_0_alone_computes_what_every_rank_gets_and_its_failure_reaches_them_all(two_processes) -> None:
    assert two_processes["computed_once"] == [
        ([0], {"from": 0}, ("UserError", "no file named x.csv")),
        ([], {"from": 0}, ("FailedOnAnotherRank", "rank 0 failed: no file named x.csv"))]


def test_the_other_ranks_end_quietly_when_rank_0_reported_the_error(monkeypatch, capsys) -> None:
    def failed(args):
        raise FailedOnAnotherRank("rank 0 failed: no file named x.csv")
    monkeypatch.setitem(cli.COMMANDS, "datasets", failed)
    assert cli.main(["datasets"]) == 2
    assert capsys.readouterr().err == ""


def _weakdml(args: list[str], processes: int = 1, timeout: float = 300) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = [*(launcher if processes > 1 else [sys.executable]), "-m", "weakdml", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False)


RUN = ["train", "--dataset", "digits", "--method", "nngk", "--batchnorm", "eval", "--device", "cpu", "--seed", "0",
       "--batch-size", "31", "--progress", "off"]


def _final(run: Path) -> dict:
    return json.loads((run / "final_metrics.json").read_text())


@pytest.mark.slow
def test_a_two_process_run_equals_a_one_process_run_and_resumes_with_one(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for run, processes in ((one, 1), (two, 2)):
        done = _weakdml([*RUN, "--epochs", "2", "--out", str(run)], processes)
        assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # one run directory
    a, b = _final(one), _final(two)
    assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-9)
    rows = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (one, two)]
    for ra, rb in zip(*rows):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)
        assert ra["val_accuracy"] == pytest.approx(rb["val_accuracy"], abs=1e-9)
    resumed = _weakdml(["train", "--resume", str(two), "--epochs", "3", "--progress", "off"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    extended = _weakdml(["train", "--resume", str(one), "--epochs", "3", "--progress", "off"])
    assert extended.returncode == 0, extended.stderr[-2000:]
    assert _final(two)["test_accuracy"] == pytest.approx(_final(one)["test_accuracy"], abs=1e-9)
    assert _final(two)["epochs"] == 3
    # a finished run evaluated and embedded by 2 processes: each embeds its share, rank 0 computes and writes
    evaluated = _weakdml(["evaluate", str(two), "--json", "--device", "cpu"], 2)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    again = json.loads(evaluated.stdout)
    for key in ("test_accuracy", "test_recall@1", "test_map@r", "test_nmi"):
        assert again[key] == pytest.approx(_final(two)[key], abs=1e-6), key
    for run, processes in ((one, 1), (two, 2)):
        done = _weakdml(["embed", str(run), "--out", str(tmp_path / f"embed-{processes}"), "--device", "cpu"],
                        processes)
        assert done.returncode == 0, done.stderr[-2000:]
    embedded = [np.load(tmp_path / f"embed-{n}" / "embeddings.npy") for n in (1, 2)]  # small-cnn: 256 features
    assert embedded[0].shape == (1797, 256) and np.allclose(embedded[0], embedded[1], atol=1e-5)
    assert (tmp_path / "embed-1" / "ids.txt").read_text() == (tmp_path / "embed-2" / "ids.txt").read_text()


@pytest.mark.slow
def test_a_failure_on_one_rank_ends_every_rank_with_its_message(tmp_path: Path) -> None:
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text(
        "import os, sys\n"
        "from weakdml.cli import main\n"
        "from weakdml.errors import UserError\n"
        "from weakdml.methods.nngk import NNGK\n"
        "def refuse(self, epoch):\n"
        "    if os.environ['RANK'] == '1':\n"
        "        raise UserError('rank 1 cannot read its images')\n"
        "NNGK.on_epoch_start = refuse\n"
        "sys.exit(main(sys.argv[1:]))\n")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([*launcher, *RUN, "--epochs", "1", "--out", str(tmp_path / "run")], capture_output=True,
                          text=True, timeout=240, env=env, cwd=ROOT, check=False)
    assert done.returncode != 0
    assert done.stderr.count("weakdml: error (rank 1): rank 1 cannot read its images") == 1
    assert "Traceback" not in done.stderr.split("weakdml: error")[0]
