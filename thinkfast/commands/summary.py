"""`thinkfast summary`: convert the teacher into a hybrid and a pure student and compare them side by side."""

from __future__ import annotations

import time


def register(subparsers) -> None:
    p = subparsers.add_parser("summary", help="teacher vs hybrid vs pure student: sizes, decode state, a greedy sample")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p) -> None:
    p.add_argument("--teacher", default="smollm2-135m", help="teacher (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--context", type=int, default=4096, help="context length for the decode-state comparison")
    p.add_argument("--prompt", default="What is 12 times 7? Answer briefly.")
    p.add_argument("--max-new-tokens", type=int, default=24)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding through the model's own prefill/step path (chat template applied)."""
    import torch

    from thinkfast.inference.params import engine_max_len

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    state = model.allocate_state(1, engine_max_len(max_new_tokens, [ids.shape[1]]))
    slots = torch.zeros(1, dtype=torch.long)
    logits = model.prefill(ids, state, slots)
    out = []
    for _ in range(max_new_tokens):
        token = logits.argmax(-1)
        if int(token) == tokenizer.eos_token_id:
            break
        out.append(int(token))
        logits = model.step(token, state, slots)
    return tokenizer.decode(out)


def run(args) -> int:
    import torch

    from thinkfast.convert import convert
    from thinkfast.teachers import load_teacher

    t0 = time.time()
    print(f"loading teacher {args.teacher} ...", flush=True)
    teacher, tokenizer = load_teacher(args.teacher)
    students = {
        "teacher (attention)": convert(teacher, "attention"),
        "hybrid (mamba1)": convert(teacher, "hybrid"),
        "pure (llamba)": convert(teacher, "llamba"),
    }
    rows = []
    for name, model in students.items():
        info = model.summary()
        state = model.allocate_state(1, args.context, dtype=torch.bfloat16, device="meta")
        sizes = state.bytes_per_slot()
        print(f"generating with {name} ...", flush=True)
        text = greedy(model, tokenizer, args.prompt, args.max_new_tokens)
        rows.append((name, info, sizes, text))
    print()
    print(f"teacher: {args.teacher}   prompt: {args.prompt!r}")
    print(f"decode state per sequence at {args.context} tokens (bf16 KV and conv state, fp32 SSM state)")
    header = f"{'model':<22}{'params':>12}  {'layers':<34}{'KV':>11}{'SSM+conv':>11}{'total':>11}"
    print(header)
    print("-" * len(header))
    for name, info, sizes, _ in rows:
        layers = ", ".join(f"{n} {k}" for k, n in info["layers"].items())
        total = sizes["kv"] + sizes["recurrent"]
        print(
            f"{name:<22}{info['parameters'] / 1e6:>10.1f} M  {layers:<34}{_fmt_bytes(sizes['kv']):>11}"
            f"{_fmt_bytes(sizes['recurrent']):>11}{_fmt_bytes(total):>11}"
        )
    print()
    print("greedy generations (students are converted, not yet distilled: expect degraded text):")
    for name, _, _, text in rows:
        print(f"  {name:<22} {text!r}")
    print(f"\ndone in {time.time() - t0:.0f} s")
    return 0
