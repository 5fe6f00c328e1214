"""RunConfig: what `thinkfast run` does, as one dataclass tree loadable from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from thinkfast.convert.spec import StudentSpec
from thinkfast.errors import ThinkfastError
from thinkfast.evaluation.config import DatasetSpec
from thinkfast.inference.params import DEFAULT_SSM_STATE_DTYPE, SSM_STATE_DTYPES, SamplingParams


@dataclass(kw_only=True)
class StudentRun(StudentSpec):
    """One student: how it is converted (the StudentSpec fields, flat in YAML: target hybrid | llamba,
    attention_layers, keep_attention, mixer, learnable_gqa_expansion) and which recipe distils it.

    `train` holds TrainConfig keys (thinkfast/training/config.py) merged over the recipe's
    defaults: max_steps, data.seq_len, optim.lr, stages, ...; teacher, data.path, student and
    output_dir are filled in by the pipeline.
    """

    name: str
    recipe: str = "distill"  # distill (hybrids) | mohawk (pure students)
    train: dict = field(default_factory=dict)
    sft: dict | None = None  # TrainConfig keys for an SFT pass after distillation (None: skip)


@dataclass
class KDDataConfig:
    synthetic_problems: int = 64  # teacher answers these synthetic problems (a seed apart from the eval set)
    synthetic_steps: int = 2
    gsm8k_problems: int = 32  # plus the first N GSM8K train problems, when the data can be found
    heldout_problems: int = 8  # the next N GSM8K train problems: held-out teacher text for KL / top-1
    samples_per_problem: int = 1  # teacher answers per problem
    temperature: float = 0.0  # 0: greedy (then samples_per_problem must be 1)
    prompt: str | None = None  # prompt style of the questions: gsm8k | math | m1 | plain | a YAML file; None: the
    #                            first eval set's, so the student learns the answers to questions asked as they will be
    max_new_tokens: int = 192
    batch_size: int = 64
    keep_truncated: bool = False  # keep answers cut by max_new_tokens (dropped by default)

    def validate(self) -> None:
        if self.samples_per_problem < 1:
            raise ThinkfastError("kd_data.samples_per_problem must be >= 1")
        if self.samples_per_problem > 1 and self.temperature == 0:
            raise ThinkfastError("kd_data.samples_per_problem > 1 needs kd_data.temperature > 0 (greedy answers repeat)")


@dataclass
class SpeedConfig:
    """Each model's decode throughput for the time budgets, the papers' way: at its best feasible batch
    among `batches` (the memory planner drops those that do not fit), at each eval set's own lengths.
    See thinkfast/pipeline/throughput.py."""

    batches: list[int] = field(default_factory=lambda: [8, 16])  # candidate batch sizes
    method: str = "full"  # full: engine.generate end to end | sampled: decode step timed at a few contexts (cheap)
    prompt_tokens: int | None = None  # None: each eval set's mean prompt length (chat template applied)
    new_tokens: int | None = None  # None: sampling.max_new_tokens
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    checkpoints: int = 3  # sampled: context lengths timed along the generation
    steps: int = 4  # sampled: decode steps timed at each

    def validate(self) -> None:
        if not self.batches or any(b < 1 for b in self.batches):
            raise ThinkfastError(f"speed.batches must hold positive batch sizes, got {self.batches}")
        if self.method not in ("full", "sampled"):
            raise ThinkfastError(f"speed.method must be full or sampled, got {self.method!r}")


@dataclass
class EvalSetConfig:
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    prompt: str = "gsm8k"


@dataclass
class RunConfig:
    teacher: str = "smollm2-135m"
    out_dir: str = "runs/main"
    data_dir: str | None = None  # GSM8K/MATH JSONL files; default $THINKFAST_DATA, then the hub
    seed: int = 0
    device: str = "auto"
    students: list[StudentRun] = field(default_factory=list)
    kd_data: KDDataConfig = field(default_factory=KDDataConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    eval_sets: list[EvalSetConfig] = field(default_factory=list)
    n_samples: int = 8
    k_list: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.6, max_new_tokens=160, seed=0))
    eval_batch_size: int = 64  # engine slots while sampling
    eval_gpus: int = 0  # sampling processes, one engine per GPU; 0 = every visible GPU (1 on CPU)
    grading_workers: int = 2
    time_method: str = "throughput"  # throughput: M1's k x tokens / measured tok/s | wall: measured sampling time
    # the students' Mamba state while they are served (speed and eval stages): each student is timed and evaluated
    # once per dtype, under its own name for the first and as `<name>-<dtype>-state` for the others (e.g.
    # [fp32, bf16]: `hybrid` and `hybrid-bf16-state`, the same weights served both ways, side by side)
    ssm_state_dtypes: list[str] = field(default_factory=lambda: [DEFAULT_SSM_STATE_DTYPE])

    def served_name(self, student: str, ssm_state_dtype: str) -> str:
        """A student's name in the speed / eval stages when served with `ssm_state_dtype`."""
        return student if ssm_state_dtype == self.ssm_state_dtypes[0] else f"{student}-{ssm_state_dtype}-state"

    def served_students(self) -> list[tuple[str, str, str]]:
        """(served name, student, SSM state dtype) of every student as the speed and eval stages serve it."""
        return [(self.served_name(s.name, d), s.name, d) for s in self.students for d in self.ssm_state_dtypes]

    def validate(self) -> None:
        names = [s.name for s in self.students]
        if len(set(names)) != len(names) or "teacher" in names:
            raise ThinkfastError(f"student names must be unique and not 'teacher', got {names}")
        for s in self.students:
            if s.recipe not in ("distill", "mohawk"):
                raise ThinkfastError(f"student {s.name!r}: recipe must be distill or mohawk, got {s.recipe!r}")
            if s.target not in ("hybrid", "llamba"):
                raise ThinkfastError(f"student {s.name!r}: target must be hybrid or llamba, got {s.target!r}")
            if s.recipe == "mohawk" and s.target == "hybrid":
                raise ThinkfastError(f"student {s.name!r}: the mohawk recipe distils a pure student: set target: llamba")
        if not self.eval_sets:
            raise ThinkfastError("eval_sets is empty: add at least one dataset (e.g. {dataset: {name: synthetic}})")
        if self.time_method not in ("throughput", "wall"):
            raise ThinkfastError(f"time_method must be throughput or wall, got {self.time_method!r}")
        unknown = [d for d in self.ssm_state_dtypes if d not in SSM_STATE_DTYPES]
        if not self.ssm_state_dtypes or unknown or len(set(self.ssm_state_dtypes)) != len(self.ssm_state_dtypes):
            raise ThinkfastError(f"ssm_state_dtypes must list distinct dtypes among {list(SSM_STATE_DTYPES)}, "
                                 f"got {self.ssm_state_dtypes}")
        taken = [self.served_name(n, d) for n in names for d in self.ssm_state_dtypes[1:]
                 if self.served_name(n, d) in names]
        if taken:
            raise ThinkfastError(f"student name {taken[0]!r} is also the name of a student served with another "
                                 "ssm_state_dtypes entry: rename that student")
        if max(self.k_list) > self.n_samples:
            raise ThinkfastError(f"k_list goes up to {max(self.k_list)} but n_samples is {self.n_samples}")
