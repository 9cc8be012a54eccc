"""The DDP code path of training, run with two CPU processes and the gloo backend."""

import multiprocessing
import os
import socket
import sys
import traceback
from pathlib import Path

from nndet.preprocessing.prepare import prepare_task
from nndet.training.checkpoint import load_checkpoint
from nndet.training.trainer import TrainConfig, train_fold

sys.path.insert(0, str(Path(__file__).parent))
from tiny_raw_task import write_tiny_task  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, port: int, config: TrainConfig, errors) -> None:
    # What torchrun puts in the environment of each process.
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})  # fmt: skip
    try:
        train_fold(config)
    except BaseException:  # report any failure of a rank to the test
        errors.put(f"rank {rank}: {traceback.format_exc()}")


def test_two_cpu_processes_train_one_model_in_sync(tmp_path, caplog):
    task = write_tiny_task(tmp_path / "data", num_cases=6)
    prepare_task(task, target="cpu", num_processes=1)
    config = TrainConfig(task_dir=task, model_dir=tmp_path / "models" / "retina_unet_2d", fold=0,
                         epochs=2, iters_per_epoch=2, num_workers=0, device="cpu",
                         validate=False)  # fmt: skip
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    port = _free_port()
    ranks = [context.Process(target=_rank_main, args=(r, port, config, errors)) for r in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=280)
    failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert not failures, "\n".join(failures)
    assert [p.exitcode for p in ranks] == [0, 0]

    out = config.model_dir / "fold0"
    state = load_checkpoint(out / "checkpoint_final.pt")
    assert state["epochs_done"] == 2
    log = (out / "log.txt").read_text()
    assert "parameters identical on all 2 ranks" in log
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # written by rank 0 only
