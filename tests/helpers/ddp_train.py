"""Run tools/train_net.py's training under detectron2's launcher and dump each rank's weights.

Used by the multi-process tests: ``python -m tests.helpers.ddp_train --num-gpus 2 --dump DIR
--config-file CFG [--dataset ...] KEY VALUE ...`` (or the same under torchrun / srun, without
--num-gpus) checks and trains like tools/train_net.py, then every rank writes its student state
dict to DIR/rank<r>.pth and rank 0 writes the final evaluation to DIR/eval.json.
"""

import json
import os
import sys

import torch
from detectron2.utils import comm

from nd_det.engine import DistillTrainer, distill_argument_parser, setup_cfg
from nd_det.engine.cli import launch_main
from nd_det.engine.train_net import precheck


def main(args):
    cfg = setup_cfg(args, setup=True)
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(args.dump, f"rank{comm.get_rank()}.pth"))
    if comm.is_main_process():
        with open(os.path.join(args.dump, "eval.json"), "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    parser = distill_argument_parser()
    parser.add_argument("--dump", required=True)
    launch_main(main, parser.parse_args(sys.argv[1:]), precheck=precheck)
