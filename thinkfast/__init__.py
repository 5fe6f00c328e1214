"""thinkfast: distil Transformer LMs into fast hybrid / pure Mamba reasoners.

Pipeline layout (one sub-package per stage):
    thinkfast.teachers    load a teacher (hub name, local dir, GGUF, embedded default)
    thinkfast.models      student decoder stack and its mixers
    thinkfast.ops         reference numerics (PyTorch) and GPU kernels (Triton) behind one dispatch
    thinkfast.convert     teacher -> student weight transfer
    thinkfast.training    data, losses, distillation / MOHAWK / SFT recipes, trainer
    thinkfast.inference   batched generation engine
    thinkfast.evaluation  datasets, prompts, grading, metrics, time budgets, plots
    thinkfast.benchmarks  kernel and end-to-end speed benchmarks
    thinkfast.cli         the `thinkfast` command
"""

__version__ = "0.1.0"

from thinkfast import _autoregister

_autoregister.install()  # AutoModelForCausalLM.from_pretrained(student_dir) works after `import thinkfast`


def generate(model, tokenizer, prompts, params=None, n: int = 1, **engine_kwargs):
    """Sample `n` completions per prompt with the batched engine (see thinkfast.inference.Engine)."""
    from thinkfast.inference.api import generate as _generate

    return _generate(model, tokenizer, prompts, params, n=n, **engine_kwargs)
