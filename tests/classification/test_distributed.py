"""Two-process DistributedDataParallel training on CPU (gloo), set up exactly as torchrun does
(RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* in the environment): both ranks end with identical
weights, the per-process batch is half the total and each test image is evaluated once."""

import json
import os
import socket

import torch
import torch.multiprocessing as mp

from .helpers import distill_section, tiny_config

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, cfg: dict, dump_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from nd_det.classification.distributed import cleanup_distributed
    from nd_det.classification.trainer import ClassificationTrainer

    trainer = ClassificationTrainer(cfg)
    assert trainer.ctx.world_size == WORLD_SIZE and trainer.ctx.rank == rank
    assert type(trainer.model).__name__ == "DistributedDataParallel"
    result = trainer.fit()
    state = {k: v.detach().clone() for k, v in result.distiller.state_dict().items()}
    torch.save(state, os.path.join(dump_dir, f"rank{rank}.pth"))
    with open(os.path.join(dump_dir, f"rank{rank}.json"), "w") as f:
        json.dump(
            {
                "eval": result.last_eval,
                "batch": trainer.batch,
                "iters": trainer.iters,
            },
            f,
        )
    cleanup_distributed()


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    distill = distill_section(tmp_path, {"reviewkd": {"mid_channels": 16}, "nd": {"weight": 1.0}})
    cfg = tiny_config(tmp_path, "ddp", distill=distill, epochs=2)
    dump = tmp_path / "dump"
    dump.mkdir()
    mp.spawn(_ddp_worker, args=(_free_port(), cfg, str(dump)), nprocs=WORLD_SIZE, join=True)

    states = [torch.load(dump / f"rank{r}.pth") for r in range(WORLD_SIZE)]
    assert states[0].keys() == states[1].keys()
    assert any(k.startswith("terms.reviewkd.") for k in states[0])
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    infos = [json.load(open(dump / f"rank{r}.json")) for r in range(WORLD_SIZE)]
    assert infos[0] == infos[1]
    assert infos[0]["batch"] == 16 and infos[0]["iters"] == 96 // 32
    assert infos[0]["eval"]["samples"] == 40  # every test image once over both ranks
    # rank 0 wrote the run's files; the saved student is the one both ranks hold
    out = cfg["train"]["output_dir"]
    saved = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)["model"]
    for key, value in saved.items():
        assert torch.equal(value, states[0][f"student.{key}"]), key
    # and training really moved the weights away from the shared initialisation
    from nd_det.classification.builders import build_distiller
    from nd_det.classification.data import build_dataset
    from nd_det.utils.seed import seed_everything

    _, info = build_dataset(cfg["data"], train=True, augment=False)
    seed_everything(cfg["train"]["seed"])
    initial = build_distiller(cfg, info)[0].student.state_dict()
    assert not torch.equal(initial["fc.weight"], states[0]["student.fc.weight"])
