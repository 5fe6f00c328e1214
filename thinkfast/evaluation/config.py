"""`EvalConfig`: everything `thinkfast eval` needs, loadable from YAML with `thinkfast.config.load_config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from thinkfast.errors import ThinkfastError
from thinkfast.inference.params import DEFAULT_SSM_STATE_DTYPE, SamplingParams, resolve_ssm_state_dtype


@dataclass
class ModelSpec:
    name: str  # label in tables/plots and the output sub-folder
    path: str | None = None  # student dir, or teacher spec: hub id, local dir, .gguf file, "smollm2-135m"
    hook: str | None = None  # "module:function" taking this spec, returning a LoadedModel or a Sampler
    tokens_per_second: float | None = None  # measured throughput for M1's time method; else wall time
    timing: dict | None = None  # how tokens_per_second (or the wall time) was measured: method, batch, lengths
    backend: Literal["engine", "hf"] = "engine"  # our batched engine, or plain transformers generate
    batch_size: int = 64  # engine: most concurrent sequences (the planner may lower it); hf: per generate call
    max_len: int = 4096  # engine: prompt + generated tokens per sequence
    ssm_state_dtype: str = DEFAULT_SSM_STATE_DTYPE  # engine: Mamba layers' recurrent state, fp32 | bf16
    device: str = "cpu"
    dtype: str = "float32"


@dataclass
class DatasetSpec:
    name: str = "gsm8k"  # gsm8k | math500 | aime24 | amc23 | synthetic | path/to/file.jsonl
    data_dir: str | None = None  # folder with the JSONL files; default $THINKFAST_DATA, then the hub
    split: str = "test"
    limit: int | None = None  # first N problems
    on_error: Literal["raise", "skip"] = "raise"
    synthetic_n: int = 50
    synthetic_steps: int = 3
    synthetic_max_operand: int = 20
    synthetic_seed: int = 0


@dataclass
class PRMSpec:
    path: str | None = None  # local HF dir of an RLHFlow-style PRM; None = no PRM (no BoN / weighted BoN)
    aggregation: Literal["last", "min", "prod", "mean"] = "last"
    batch_size: int = 8
    device: str = "cpu"


@dataclass
class EvalConfig:
    models: list[ModelSpec] = field(default_factory=list)
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    n_samples: int = 16
    k_list: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    prompt: str = "math"  # math | gsm8k | m1 | plain | path to a YAML template (system/user)
    use_chat_template: bool = True
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.6, max_new_tokens=2048, seed=0))
    out_dir: str = "eval_out"
    num_shards: int = 1  # problem-range shards (one JSONL file each)
    shards: list[int] | None = None  # shards this process samples; None = all
    gpus: int = 1  # sampling processes this command spawns, one engine per GPU (torchrun: one per rank instead)
    problems_per_batch: int = 4  # problems per sampler call (one fsync'ed append each)
    grading_timeout: float = 10.0  # seconds per equivalence check before its worker is killed
    grading_workers: int = 2
    metrics: list[str] = field(default_factory=lambda: ["pass", "maj", "bon", "wbon"])
    trials: int = 100  # random subsets per k for maj/BoN/weighted BoN
    metric_seed: int = 0
    exact_limit: int = 2000  # enumerate all subsets when C(n, k) <= this
    prm: PRMSpec = field(default_factory=PRMSpec)
    progress: bool = True

    def validate(self) -> None:
        if self.n_samples < 1:
            raise ThinkfastError(f"n_samples must be >= 1, got {self.n_samples}")
        if not self.k_list or any(k < 1 for k in self.k_list):
            raise ThinkfastError(f"k_list must hold positive integers, got {self.k_list}")
        too_big = sorted(k for k in self.k_list if k > self.n_samples)
        if too_big:  # they would silently vanish from the scores and the report
            raise ThinkfastError(f"k_list has {too_big} above n_samples={self.n_samples}: every k needs that many "
                                 "samples per problem; raise n_samples or drop those k")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ThinkfastError(f"model names must be unique, got {names}")
        for m in self.models:
            if not (m.path or m.hook):
                raise ThinkfastError(f"model {m.name!r} needs a path (local HF dir) or a hook (module:function)")
            try:
                resolve_ssm_state_dtype(m.ssm_state_dtype)
            except ThinkfastError as err:
                raise ThinkfastError(f"model {m.name!r}: {err}") from None
        unknown = set(self.metrics) - {"pass", "maj", "bon", "wbon"}
        if unknown:
            raise ThinkfastError(f"unknown metrics {sorted(unknown)}; use pass, maj, bon, wbon")
        if self.gpus < 1:
            raise ThinkfastError(f"gpus must be >= 1, got {self.gpus}")
        self.sampling.validate()
