"""Under torch.distributed (2 CPU ranks, gloo) every rank gates the same channels and DDP trains through the gates."""

from __future__ import annotations

import json
import os

import torch
import torch.multiprocessing as mp


def _rank(rank: int, world: int, port: int, out: str) -> None:
    import timm
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from distilkit.schedule import CosineSchedule
    from distilkit.width import ProgressiveWidthPruner, channel_importance, find_mlp_sites
    from distilkit.width.reduce import choose_drops

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2)
    torch.manual_seed(100 + rank)  # each rank sees different data, so Taylor scores differ per rank
    batches = [(torch.randn(2, 3, 32, 32), torch.randint(0, 1000, (2,)))]

    def loss_fn(m, batch):
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    scores = channel_importance(model, find_mlp_sites(model), "taylor", batches, loss_fn)
    local = choose_drops(scores, [192, 192])
    ddp = DDP(model)
    pruner = ProgressiveWidthPruner(ddp, 1.0, importance="taylor", batches=batches, loss_fn=loss_fn,
                                    schedule=CosineSchedule(m=2))
    pruner.set_epoch(1)
    loss_fn(ddp, batches[0]).backward()
    grad = model.blocks[0].mlp.fc1.weight.grad
    result = {"local": [list(d) for d in local], "agreed": [list(d) for d in pruner.state_dict()["drop"]],
              "grad_sum": float(grad.double().sum()), "keys": len(model.state_dict())}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump(result, fh)
    dist.destroy_process_group()


def test_ranks_agree_on_channels_and_ddp_trains(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2))
    assert r0["local"] != r1["local"]  # without agreement the ranks would gate different channels
    assert r0["agreed"] == r1["agreed"] == r0["local"]  # everyone adopts rank 0's choice
    assert abs(r0["grad_sum"] - r1["grad_sum"]) < 1e-6  # DDP averaged gradients through the gates
    assert r0["keys"] == r1["keys"]
