"""Run by torchrun in test_distributed.py: train from a JSON config (`--resume` continues its checkpoint),
rank 0 writes the losses."""

import json
import sys

import torch

from thinkfast.config import load_config
from thinkfast.training.config import TrainConfig
from thinkfast.training.recipes import run

torch.set_num_threads(1)
cfg = load_config(TrainConfig, json.load(open(sys.argv[1])))
result = run(cfg, resume="--resume" in sys.argv[3:])
if isinstance(result, list):  # mohawk: one result per stage
    result = result[-1]
if torch.distributed.is_initialized():
    if torch.distributed.get_rank() == 0:
        json.dump(result.losses, open(sys.argv[2], "w"))
    torch.distributed.destroy_process_group()
else:
    json.dump(result.losses, open(sys.argv[2], "w"))
