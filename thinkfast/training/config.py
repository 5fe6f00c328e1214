"""Training configuration: one dataclass tree for the `distill`, `mohawk` and `sft` recipes.

Loaded with `thinkfast.config.load_config(TrainConfig, yaml, overrides)`; every check that can
fail without touching a model or a file runs in `validate()`, so a bad config stops at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from thinkfast.convert.spec import StudentSpec
from thinkfast.errors import ThinkfastError

RECIPES = ("distill", "mohawk", "sft")
LOSS_TERMS = ("reverse_kl", "forward_kl", "ce")
SCHEDULES = ("cosine", "wsd", "constant")


@dataclass
class DataConfig:
    path: str = ""  # a .jsonl file, a directory of .jsonl files, or an HF dataset name ("hf:name[:config]")
    split: str = "train"  # for HF datasets
    format: str = "auto"  # auto | messages | problem_solution | text
    prompt_field: str | None = None  # auto: question / problem / prompt
    response_field: str | None = None  # auto: answer / solution / response
    system_prompt: str | None = None  # prepended as a system message to problem/solution pairs
    prompt_template: str = "{prompt}"  # user message built from the problem text
    train_on: str = "response"  # response: labels on assistant tokens only | all: every token
    seq_len: int = 2048
    packing: bool = True
    max_examples: int | None = None  # keep the first N documents
    shuffle: bool = True

    def validate(self) -> None:
        if self.format not in ("auto", "messages", "problem_solution", "text"):
            raise ThinkfastError(f"data.format {self.format!r} must be auto, messages, problem_solution or text")
        if self.train_on not in ("response", "all"):
            raise ThinkfastError(f"data.train_on {self.train_on!r} must be 'response' (assistant tokens) or 'all'")
        if self.seq_len < 2:
            raise ThinkfastError(f"data.seq_len must be >= 2, got {self.seq_len}")
        if "{prompt}" not in self.prompt_template:
            raise ThinkfastError("data.prompt_template must contain '{prompt}' where the problem text goes")


@dataclass
class LossConfig:
    # weights of the terms of the token loss; zero-weight terms are skipped
    reverse_kl: float = 1.0
    forward_kl: float = 0.0
    ce: float = 0.0
    temperature: float = 1.0
    chunk_tokens: int = 1024  # positions per chunk: chunk x vocab logits exist at a time
    # inputs of the LM-head matmuls inside the loss (logits, d/dh, d/dW; accumulation and softmax stay fp32):
    # auto = bf16 inside bf16 autocast (CUDA default), else fp32 | fp32 | bf16
    matmul_dtype: str = "auto"

    def terms(self) -> dict[str, float]:
        return {name: w for name, w in ((t, getattr(self, t)) for t in LOSS_TERMS) if w != 0.0}

    def validate(self) -> None:
        if not self.terms():
            raise ThinkfastError(f"the loss has no term with a non-zero weight; set one of {list(LOSS_TERMS)}")
        if any(w < 0 for w in self.terms().values()):
            raise ThinkfastError("loss weights must be >= 0")
        if self.temperature <= 0:
            raise ThinkfastError(f"loss.temperature must be > 0, got {self.temperature}")
        if self.chunk_tokens < 1:
            raise ThinkfastError("loss.chunk_tokens must be >= 1")
        if self.matmul_dtype not in ("auto", "fp32", "bf16"):
            raise ThinkfastError(f"loss.matmul_dtype {self.matmul_dtype!r} must be auto, fp32 or bf16")


@dataclass
class OptimConfig:
    lr: float = 2e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables
    schedule: str = "cosine"  # cosine | wsd | constant
    warmup: float = 0.01  # fraction of max_steps (< 1) or a step count (>= 1)
    decay: float = 0.1  # wsd: fraction (or steps) of the final linear decay
    min_lr_ratio: float = 0.0  # floor of the schedule, as a fraction of lr
    # distill (hybrid) end-to-end stages: lr multiplier for the parameters copied unchanged from the teacher
    # (embeddings, norms, MLPs, kept attention, LM head); the new Mamba mixers train at lr itself
    teacher_lr_scale: float = 1.0

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ThinkfastError(f"optim.schedule {self.schedule!r} is unknown; choose one of {list(SCHEDULES)}")
        if self.lr <= 0:
            raise ThinkfastError(f"optim.lr must be > 0, got {self.lr}")
        if self.teacher_lr_scale <= 0:
            raise ThinkfastError(f"optim.teacher_lr_scale must be > 0 (freeze parameters by other means), got "
                                 f"{self.teacher_lr_scale}")


@dataclass(kw_only=True)
class StudentConfig(StudentSpec):
    """The student: an existing directory (`path`), else the teacher converted as the StudentSpec fields
    (target, attention_layers, keep_attention, mixer, learnable_gqa_expansion) say.  With
    attention_layers=auto the alignment stage picks the `keep_attention` layers (needs align.max_steps > 0)."""

    path: str | None = None  # an existing student directory (save_pretrained layout); else convert the teacher


@dataclass
class AlignConfig:
    """Hybrid distillation's first stage: each Mamba mixer learns its layer's attention output (align.py)."""

    max_steps: int = 0  # 0: no alignment stage
    lr: float = 3e-3
    warmup: float = 0.05
    micro_batch_size: int | None = None  # None: the top-level micro_batch_size
    grad_accum: int | None = None  # None: the top-level grad_accum
    seq_len: int | None = None  # rows of the top-level data packed to this length (None: data.seq_len)
    select_attention: int = 0  # > 0: the student starts all-Mamba; after alignment these many layers go back
    #                            to the teacher's attention, chosen greedily by held-in KL (align.py)
    selection_rows: int = 8  # rows of training data the selection measures on

    def validate(self) -> None:
        if self.max_steps < 0 or self.lr <= 0 or self.select_attention < 0:
            raise ThinkfastError("align.max_steps and align.select_attention must be >= 0 and align.lr > 0")
        if self.select_attention and not self.max_steps:
            raise ThinkfastError("align.select_attention chooses layers after alignment: set align.max_steps > 0")


@dataclass
class OnPolicyConfig:
    """Hybrid distillation's last stage: end-to-end distillation on the student's OWN answers (onpolicy.py).

    Each round the student answers `prompts_per_round` prompts of the training data (their prompt part) with
    the engine at its current weights; the token loss against the teacher is taken at every generated
    position. The offline end-to-end steps (`max_steps`) run first, on the teacher's answers."""

    max_steps: int = 0  # 0: no on-policy stage
    lr: float | None = None  # None: optim.lr
    warmup: float | None = None  # None: optim.warmup
    prompts_per_round: int = 512  # answers generated per round (each prompt once); a round trains on all of them
    temperature: float = 1.0  # sampling temperature of the student's answers
    max_new_tokens: int = 512
    max_batch: int | None = None  # decode slots (None: prompts_per_round)

    def validate(self) -> None:
        if self.max_steps < 0 or self.prompts_per_round < 1 or self.max_new_tokens < 1:
            raise ThinkfastError("onpolicy.max_steps must be >= 0, onpolicy.prompts_per_round and "
                                 "onpolicy.max_new_tokens >= 1")
        if self.temperature <= 0:
            raise ThinkfastError(f"onpolicy.temperature must be > 0 (the student samples its answers), got "
                                 f"{self.temperature}")
        if self.lr is not None and self.lr <= 0:
            raise ThinkfastError(f"onpolicy.lr must be > 0, got {self.lr}")


@dataclass
class MohawkStage:
    stage: int = 1  # 1: mixer matrix, 2: block output, 3: end-to-end logits
    max_steps: int = 100
    lr: float | None = None  # None: optim.lr
    layers: list[int] | None = None  # stages 1-2: layers to train (None: every non-attention layer)
    data: DataConfig | None = None  # None: the top-level data
    loss: LossConfig | None = None  # stage 3 only; None: the top-level loss
    matrix_chunk: int = 32  # stage 1: (row, head) L x L matrices alive at a time (0: a whole layer in one graph)

    def validate(self) -> None:
        if self.stage not in (1, 2, 3):
            raise ThinkfastError(f"mohawk stage must be 1, 2 or 3, got {self.stage}")
        if self.max_steps < 1:
            raise ThinkfastError("mohawk stage max_steps must be >= 1")
        if self.matrix_chunk < 0:
            raise ThinkfastError("mohawk stage matrix_chunk must be >= 0 (0: no chunking)")


@dataclass
class TrainConfig:
    recipe: str = "distill"
    teacher: str | None = None  # hub name, directory, .gguf or embedded name (distill / mohawk)
    tokenizer: str | None = None  # sft: where the tokenizer lives (default: student.path)
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stages: list[MohawkStage] = field(default_factory=list)  # mohawk only, run in order
    align: AlignConfig = field(default_factory=AlignConfig)  # distill only: mixer alignment before end-to-end
    onpolicy: OnPolicyConfig = field(default_factory=OnPolicyConfig)  # distill only: on the student's own answers
    heldout: DataConfig | None = None  # held-out teacher text: KL / top-1 agreement measured before and after
    heldout_rows: int = 16  # rows of heldout.seq_len tokens measured
    output_dir: str = "runs/thinkfast"
    seed: int = 0
    max_steps: int = 100
    micro_batch_size: int = 1  # rows per forward, per process
    grad_accum: int = 1
    dtype: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU | fp32 | bf16
    teacher_dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    device: str = "auto"
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile the student's decoder-block glue (norms, residual adds, MLP); mixers stay eager
    save_every: int = 500  # steps between checkpoints (0: only the final one)
    keep_checkpoint: bool = False  # keep checkpoint/ after final/ is saved (to extend the run later with --resume)
    log_every: int = 1
    distributed: str = "ddp"  # ddp | fsdp (only used under torchrun with >1 process)
    progress: bool = True

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise ThinkfastError(f"recipe {self.recipe!r} is unknown; choose one of {list(RECIPES)}")
        if self.recipe in ("distill", "mohawk") and not self.teacher:
            raise ThinkfastError(
                f"the {self.recipe} recipe needs a teacher: set `teacher:` to a hub name, a model directory, "
                "a .gguf file or 'smollm2-135m' (or override teacher=...)"
            )
        if self.recipe == "sft" and not self.student.path:
            raise ThinkfastError("the sft recipe trains an existing model: set student.path to its directory")
        if self.recipe == "mohawk" and not self.stages:
            raise ThinkfastError("the mohawk recipe needs `stages:` (a list of {stage: 1|2|3, max_steps: N})")
        if self.recipe == "mohawk" and not self.student.path and self.student.target == "hybrid":
            raise ThinkfastError("the mohawk recipe distils a pure student: set student.target: llamba")
        if self.recipe != "mohawk" and self.stages:
            raise ThinkfastError(f"`stages` only applies to the mohawk recipe, not {self.recipe}")
        if not self.data.path:
            raise ThinkfastError("data.path is empty: give a .jsonl file, a directory of them, or hf:<dataset>")
        for name in ("max_steps", "micro_batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ThinkfastError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dtype not in ("auto", "fp32", "bf16") or self.teacher_dtype not in ("auto", "fp32", "bf16"):
            raise ThinkfastError("dtype / teacher_dtype must be auto, fp32 or bf16")
        if self.align.max_steps and self.recipe != "distill":
            raise ThinkfastError(f"align only applies to the distill recipe (hybrids), not {self.recipe}")
        if self.onpolicy.max_steps and self.recipe != "distill":
            raise ThinkfastError(f"onpolicy only applies to the distill recipe, not {self.recipe}")
        if self.onpolicy.max_steps and self.data.train_on != "response":
            raise ThinkfastError("onpolicy needs prompts to answer: data.train_on must be 'response' (records with "
                                 "a user turn); the student's answers replace the responses")
        auto = self.student.attention_layers == "auto"
        if auto and not (self.align.max_steps and self.student.keep_attention):
            raise ThinkfastError(
                "student.attention_layers=auto picks layers after alignment: set align.max_steps > 0 and "
                "student.keep_attention to the number of attention layers to keep"
            )
        if self.distributed not in ("ddp", "fsdp"):
            raise ThinkfastError(f"distributed {self.distributed!r} must be ddp or fsdp")

    def check_paths(self) -> None:
        """Local model paths that do not exist, named before anything loads (not in `validate`: a shipped
        config may name a folder an earlier run will create)."""
        from thinkfast.config import check_local_model_path

        check_local_model_path(self.teacher, "teacher")
        check_local_model_path(self.student.path, "student.path")
        check_local_model_path(self.tokenizer, "tokenizer")
