"""Batch-size buckets and the CUDA graphs of the decode step (one per bucket and sampler mode)."""

from __future__ import annotations

import time
from typing import Callable

import torch


def bucket_sizes(num_slots: int) -> list[int]:
    """Decode batch sizes with a captured graph: 1, 2, 4, ..., 64, then 96, 128, 192, 256, 384, ... (a
    midpoint between powers of two), up to num_slots, and num_slots itself.

    A window runs at the smallest bucket that holds its active sequences, the rest being padding rows. Above
    ~64 rows the step's matmuls are no longer overhead-bound, so padding costs time in proportion: power-of-two
    buckets pad up to 2x (25% on average as a batch drains), these up to 1.5x (~15%), for twice the captures
    above 64."""
    sizes, b = [], 1
    while b < num_slots:
        sizes.append(b)
        if b >= 64 and b + b // 2 < num_slots:
            sizes.append(b + b // 2)
        b *= 2
    sizes.append(num_slots)
    return sizes


def pick_bucket(sizes: list[int], active: int) -> int:
    for size in sizes:
        if size >= active:
            return size
    raise ValueError(f"{active} active sequences exceed the largest bucket {sizes[-1]}")


class DecodeGraphs:
    """Captures `body(slots)` once per (bucket, key) and replays it with new slot indices.

    `body` must only read and write tensors that live as long as the engine (the state pool
    and the per-slot tables); `slots` is the graph's static input.  Padding rows point at a
    scratch slot, which `reset_scratch` rewinds before every window.
    """

    def __init__(self, device: torch.device, body: Callable, reset_scratch: Callable, scratch: int):
        self.device = device
        self.body = body
        self.reset_scratch = reset_scratch
        self.scratch = scratch
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = None
        self.capture_seconds = 0.0

    def get(self, bucket: int, key) -> tuple["torch.cuda.CUDAGraph", torch.Tensor]:
        if (bucket, key) in self.graphs:
            return self.graphs[(bucket, key)]
        start = time.perf_counter()
        slots = torch.full((bucket,), self.scratch, dtype=torch.long, device=self.device)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up: lazy inits and kernel compilation happen here
            for _ in range(2):
                self.reset_scratch()
                self.body(slots, key)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.reset_scratch()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.body(slots, key)
        torch.cuda.synchronize(self.device)
        self.capture_seconds += time.perf_counter() - start
        self.graphs[(bucket, key)] = (graph, slots)
        return graph, slots
