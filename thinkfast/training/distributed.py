"""torchrun support: process-group setup, DDP / FSDP wrapping, reductions, full state dicts."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from thinkfast.device import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for one process).

    On CUDA call it with this rank's GPU already current (`setup_device` does): NCCL binds the
    communicator to `device_id` at once instead of guessing the GPU from the rank (which is wrong on
    every node but the first of a multi-node job, and a hang when two ranks pick one GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            try:
                dist.init_process_group(backend="nccl", device_id=device)
            except TypeError:  # torch without `device_id`
                dist.init_process_group(backend="nccl")
        else:
            dist.init_process_group(backend="gloo")
    return info


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def setup_device(name: str) -> tuple[torch.device, DistInfo]:
    """Resolve `auto`/`cpu`/`cuda[:i]`, pin this rank's GPU (LOCAL_RANK), then join the torchrun group."""
    device = resolve_device(name)
    if device.type == "cuda":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one GPU per rank: the local rank's, whatever `name` said
            device = torch.device("cuda", local_rank())
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)  # before init_process_group: NCCL uses the current device
    return device, init_distributed(device)


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def wrap(module: nn.Module, info: DistInfo, strategy: str, device: torch.device, block_types: tuple = ()) -> nn.Module:
    """DDP (parameters replicated) or FSDP2 `fully_shard` (each block, then the root)."""
    if not info.enabled:
        return module
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # the mesh names the device type: left implicit, FSDP2 picks CUDA whenever a GPU is visible, even for a
        # run asked to train on the CPU (parameters move to cuda:0, and a second rank finds no cuda:1)
        mesh = init_device_mesh(device.type, (info.world_size,))
        for sub in module.modules():
            if block_types and isinstance(sub, block_types) and any(p.requires_grad for p in sub.parameters()):
                fully_shard(sub, mesh=mesh)
        fully_shard(module, mesh=mesh)
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") and isinstance(module, nn.parallel.DistributedDataParallel) else module


def full_state(module: nn.Module, optimizer, info: DistInfo):
    """(model state, optimizer state) as full tensors on CPU, valid on rank 0, for DDP and FSDP alike."""
    if not info.enabled:
        return module.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(unwrap(module) if strategy_of(module) == "ddp" else module, optimizer, options=opts)


def load_full_state(module: nn.Module, optimizer, model_state, optim_state, info: DistInfo) -> None:
    if not info.enabled:
        module.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    opts = StateDictOptions(full_state_dict=True)
    target = unwrap(module) if strategy_of(module) == "ddp" else module
    set_state_dict(target, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=opts)


def strategy_of(module: nn.Module) -> str:
    return "ddp" if isinstance(module, nn.parallel.DistributedDataParallel) else "fsdp"
