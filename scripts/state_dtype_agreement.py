"""Greedy agreement of a student decoded with a bf16 Mamba state against the same student with an fp32 one.

    python scripts/state_dtype_agreement.py STUDENT_DIR [--problems 200] [--max-new-tokens 512] [--control-batch 64]
                                            [--out FILE.json]

The prompts are the first GSM8K test problems rendered with the evaluation's gsm8k prompt (chat template
applied), found through $THINKFAST_DATA or the hub like every eval set. Prints and optionally writes the
comparison of thinkfast/benchmarks/state_agreement.py: the fraction of identical completions, the shared
prefix as a fraction of the fp32 completion, and where the differing ones first differ. With --control-batch N
the fp32 state is also decoded with N slots instead of one per prompt and compared the same way: the noise floor
of greedy decoding in bf16 weights, which the bf16 state's effect should be read against.
"""

import argparse
import json

import torch

from thinkfast.benchmarks.state_agreement import greedy_agreement
from thinkfast.device import resolve_device
from thinkfast.evaluation.config import DatasetSpec, EvalConfig
from thinkfast.evaluation.pipeline import load_problem_set
from thinkfast.evaluation.prompts import load_template, render_prompt
from thinkfast.inference.api import load_for_generation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student", help="student directory (or any model spec)")
    parser.add_argument("--problems", type=int, default=200, help="first N GSM8K test problems")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--control-batch", type=int, help="also decode fp32 with this many slots (the noise floor)")
    parser.add_argument("--out", help="write the comparison here as JSON")
    args = parser.parse_args()
    device = resolve_device("auto")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, tokenizer = load_for_generation(args.student, dtype=dtype, device=str(device))
    problems = load_problem_set(EvalConfig(dataset=DatasetSpec(name="gsm8k", limit=args.problems), prompt="gsm8k",
                                           progress=False)).problems
    template = load_template("gsm8k")
    prompts = [render_prompt(tokenizer, template, p.question) for p in problems]
    result = greedy_agreement(model, tokenizer, prompts, ["fp32", "bf16"], args.max_new_tokens,
                              max_batch=len(prompts), control_batch=args.control_batch)
    result.update(student=args.student, problems=len(prompts), device=str(device), model_dtype=str(dtype))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
