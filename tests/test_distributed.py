"""DistributedDataParallel path on CPU: two processes, gloo backend, one fine-tune epoch on digits."""
from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist
    from core.train.data import load_data
    from core.models.digits import digits_cnn
    from core.train.loop import TrainConfig, train
    data = load_data("digits", batch_size=32)
    # different initial weights per rank: DDP must broadcast rank 0's
    model = digits_cnn(8, seed=rank)
    ck = os.path.join(out_dir, "ck")
    r = train(model, data, TrainConfig(epochs=1, lr=0.05, max_batches=8, checkpoint_dir=ck))
    assert dist.is_initialized() and dist.get_world_size() == world
    torch.save({"params": {k: v.detach() for k, v in r.model.named_parameters()},
                "steps": len(r.history), "top1": r.final.top1}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_two_processes_end_identical(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a["params"].keys() == b["params"].keys()
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    # trained: differs from rank 0's initial weights
    from core.models.digits import digits_cnn
    init = dict(digits_cnn(8, seed=0).named_parameters())
    assert any(not torch.equal(init[k], a["params"][k]) for k in init)
    # only rank 0 wrote the checkpoint, and it is complete
    files = os.listdir(tmp_path / "ck")
    assert files == ["checkpoint.pt"]
    assert torch.load(tmp_path / "ck" / "checkpoint.pt", weights_only=True)["epoch"] == 1
