"""The HF peer on CPU with a tiny Llama: every route runs, records carry what the report needs,
the fastest route is "the peer", a recompile inside the timed call is caught and re-timed, and a
route that kills its process does not lose the others."""

import json
import subprocess

from thinkfast.benchmarks import peer, speed

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, vocab_size=300, max_position_embeddings=256)
FIELDS = {"peer", "size", "batch", "prompt", "gen", "tokens_per_s", "route", "compile_s"}


def test_every_route_compiled_with_a_cheap_backend():
    """torch.compile with the eager backend on CPU: the warm-up compiles, and only the plain recipe
    (8-token warm-ups, no max_cache_len) recompiles inside its timed call — which is then timed again."""
    records = peer.run(TINY, batch=2, prompt=6, gen=12, device="cpu", dtype="float32", compile_backend="eager")
    assert [r["route"] for r in records] == list(peer.ROUTES)
    for r in records:
        assert r["ok"], r
        assert FIELDS <= set(r) and r["tokens_per_s"] > 0 and r["compiled"]
        assert r["end_to_end_tokens_per_s"] > 0 and r["decode_s"] < r["generate_s"]  # prefill taken out
    by = {r["route"]: r for r in records}
    assert by["compile_config"]["max_cache_len"] == by["default"]["max_cache_len"] == 18
    assert not by["compile_config"]["recompiled_in_timed_call"] and not by["default"]["recompiled_in_timed_call"]
    assert by["plain"]["max_cache_len"] is None and by["plain"]["recompiled_in_timed_call"]
    assert not by["plain"]["recompiled_again"]
    assert peer.best(records)["tokens_per_s"] == max(r["tokens_per_s"] for r in records)


def test_subprocess_routes_on_cpu_without_compile():
    """The benchmark's own call: a subprocess, one PEER_RESULT line per route, the fastest marked."""
    records = speed.run_peer(TINY, 2, 6, 5, timeout=120, device="cpu", dtype="float32")
    assert [r["route"] for r in records] == list(peer.ROUTES)
    assert all(r["ok"] and FIELDS <= set(r) and not r["compiled"] for r in records)  # CPU: transformers does not compile
    assert sum(r["is_peer"] for r in records) == 1
    chosen = next(r for r in records if r["is_peer"])
    assert chosen["tokens_per_s"] == max(r["tokens_per_s"] for r in records)
    results = {"peer": records}
    assert speed.the_peer(results, "custom", 2, 6, 5) is chosen


def test_a_route_that_kills_the_process_is_recorded_and_the_rest_rerun(monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        args = json.loads(cmd[-1])
        calls.append(args["routes"])
        if len(calls) == 1:  # first route works, the second segfaults the process
            line = {"ok": True, "route": args["routes"][0], "tokens_per_s": 10.0, "batch": 2, "prompt": 6, "gen": 5}
            return subprocess.CompletedProcess(cmd, -11, "PEER_RESULT " + json.dumps(line) + "\n", "Segmentation fault")
        lines = [{"ok": True, "route": r, "tokens_per_s": 20.0, "batch": 2, "prompt": 6, "gen": 5} for r in args["routes"]]
        return subprocess.CompletedProcess(cmd, 0, "".join("PEER_RESULT " + json.dumps(x) + "\n" for x in lines), "")

    monkeypatch.setattr(speed.subprocess, "run", fake_run)
    records = speed.run_peer("1b", 2, 6, 5, timeout=10)
    assert calls == [list(peer.ROUTES), [peer.ROUTES[2]]]
    by = {r["route"]: r for r in records}
    assert not by[peer.ROUTES[1]]["ok"] and "exit -11" in by[peer.ROUTES[1]]["error"]
    assert by[peer.ROUTES[2]]["is_peer"] and not by[peer.ROUTES[0]]["is_peer"]
