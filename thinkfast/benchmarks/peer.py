"""The peer: HF transformers `generate` with a static cache and torch.compile, random Llama weights.

Run in a subprocess by the speed benchmark (so a compile failure, OOM or hang is recorded and
never takes the benchmark down):  python -m thinkfast.benchmarks.peer '{"size": "1b", ...}'
Prints one JSON line.  Decode-only time = time(generate G tokens) - time(generate 1 token).
"""

from __future__ import annotations

import json
import sys
import time


def run(size: str, batch: int, prompt: int, gen: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from thinkfast.benchmarks.shapes import COMMON, TEACHERS

    shape = TEACHERS[size]
    config = LlamaConfig(
        vocab_size=COMMON["vocab_size"], hidden_size=shape["hidden_size"], intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_hidden_layers"], num_attention_heads=shape["num_attention_heads"],
        num_key_value_heads=shape["num_key_value_heads"], head_dim=shape["head_dim"], tie_word_embeddings=True,
        max_position_embeddings=COMMON["max_position_embeddings"],
    )
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config.cache_implementation = "static"
    model.generation_config.pad_token_id = 0
    model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    ids = torch.randint(10, 1000, (batch, prompt), device="cuda")
    mask = torch.ones_like(ids)

    def timed(new_tokens: int) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    t0 = time.perf_counter()
    timed(4)  # compiles prefill and decode graphs
    timed(4)
    compile_s = time.perf_counter() - t0
    t_prefill = timed(1)
    t_full = timed(gen)
    decode_s = max(t_full - t_prefill, 1e-9)
    return {"ok": True, "decode_s": decode_s, "tokens_per_s": batch * (gen - 1) / decode_s, "prefill_s": t_prefill,
            "compile_s": compile_s, "peak_memory_bytes": torch.cuda.max_memory_allocated()}


def main() -> None:
    args = json.loads(sys.argv[1])
    try:
        result = run(**args)
    except Exception as err:  # recorded by the caller, never fatal
        result = {"ok": False, "error": f"{type(err).__name__}: {str(err)[:500]}",
                  "oom": "out of memory" in str(err).lower()}
    print("PEER_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
