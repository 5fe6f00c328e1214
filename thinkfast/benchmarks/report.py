"""Speed benchmark output: PNG plots (matplotlib Agg) and a Markdown table.

speed.png: tokens/s (with the roofline bound dotted) and fraction of bound, one column per panel
(a protocol, or a protocol's generation length when it sweeps batches at several lengths).
speed_roofline.png: fraction of the roofline bound, one panel per model shape, teacher beside its students at every
point; a black tick on each bar marks its serial bound as a fraction of the roofline (the ceiling for a step's
kernels in sequence), a diamond the full `generate` run.
A model measured with a non-default SSM state dtype is its own series ("hybrid-qwen-0.5b, bf16 state").
"""

from __future__ import annotations

from pathlib import Path

from thinkfast.benchmarks import gpu_clocks

DEFAULT_TITLES = {"A": "prompt 512 + gen 512", "B": "prompt 256 + decode 4096", "C": "prompt 256, batch 128"}


def _fmt(x, spec=",.0f"):
    return "—" if x is None else format(x, spec)


def state_suffix(p: dict) -> str:
    """", bf16 state" for a point measured with a non-default SSM state dtype, else ""."""
    from thinkfast.inference.params import DEFAULT_SSM_STATE_DTYPE

    dtype = p.get("ssm_state_dtype")
    return "" if dtype in (None, DEFAULT_SSM_STATE_DTYPE) else f", {dtype} state"


def series(p: dict) -> str:
    """A point's line in the plots: the model, and its SSM state dtype where it is not the default."""
    return p["model"] + state_suffix(p)


def _panels(results: dict) -> list[tuple[str, str, int | None, str]]:
    """(protocol, x key, fixed gen or None, title) for every panel, from the points themselves."""
    panels = []
    for protocol in dict.fromkeys(p["protocol"] for p in results["points"] + results["full"]):
        pts = [p for p in results["points"] + results["full"] if p["protocol"] == protocol]
        batches, gens = sorted({p["batch"] for p in pts}), sorted({p["gen"] for p in pts})
        prompt = pts[0]["prompt"]
        if len(batches) == 1 and len(gens) > 1:
            panels.append((protocol, "gen", None, f"{protocol}: prompt {prompt}, batch {batches[0]}"))
        else:
            for gen in gens:
                panels.append((protocol, "batch", gen, f"{protocol}: prompt {prompt} + gen {gen}"))
    return panels


def write_plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(results) or [("A", "batch", 512, DEFAULT_TITLES["A"])]
    fig, axes = plt.subplots(2, len(panels), figsize=(5.7 * len(panels), 9), squeeze=False)
    colors = {}
    for col, (protocol, xkey, gen, title) in enumerate(panels):
        ax, axf = axes[0, col], axes[1, col]

        def here(p, protocol=protocol, gen=gen):
            return p["protocol"] == protocol and (gen is None or p["gen"] == gen)

        for model in dict.fromkeys(series(p) for p in results["points"] + results["full"]):
            pts = sorted((p for p in results["points"] if series(p) == model and here(p)), key=lambda p: p[xkey])
            full = sorted((p for p in results["full"] if series(p) == model and here(p) and not p["oom"]),
                          key=lambda p: p[xkey])
            ok = [p for p in pts if not p["oom"]]
            shown = ok or full
            if not shown:
                continue
            style = "o-" if ok else "s"
            line, = ax.plot([p[xkey] for p in shown], [p["tokens_per_s"] for p in shown], style, label=model,
                            color=colors.get(model))
            colors[model] = line.get_color()
            bounds = pts or full
            ax.plot([p[xkey] for p in bounds], [p["bound_tokens_per_s"] for p in bounds], ":", color=line.get_color(),
                    alpha=0.6)
            axf.plot([p[xkey] for p in shown], [p["fraction_of_bound"] for p in shown], style, color=line.get_color(),
                     label=model)
            for p in pts:
                if p["oom"]:
                    ax.plot(p[xkey], p["bound_tokens_per_s"], "x", color=line.get_color(), markersize=10)
            if ok:
                for p in full:
                    ax.plot(p[xkey], p["tokens_per_s"], "s", color="black", markersize=5)
        for peer in results.get("peer", []):
            if peer.get("ok") and xkey == "batch" and any(
                    here(p) and p["prompt"] == peer["prompt"] and p["gen"] == peer["gen"]
                    for p in results["points"] + results["full"]):
                ax.plot(peer["batch"], peer["tokens_per_s"], "*" if peer.get("is_peer") else "+", markersize=14,
                        label=f"HF generate {peer['size']} ({peer['route']})")
        for a in (ax, axf):
            a.set_xscale("log", base=2)
            a.set_xlabel(xkey)
            a.grid(alpha=0.3)
        ax.set_yscale("log")
        ax.set_ylabel("decode tokens/s")
        ax.set_title(f"{title}\n(dotted: roofline bound, x: does not fit, square: full run)", fontsize=9)
        axf.set_ylabel("fraction of roofline bound")
        axf.set_ylim(0, 1.05)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"thinkfast engine decode throughput — {results['gpu']} — {results['date']}")
    fig.tight_layout()
    fig.savefig(out / "speed.png", dpi=110)
    plt.close(fig)
    write_roofline_plot(results, out)


KIND_COLORS = {"teacher": "0.6", "hybrid": "tab:blue", "pure": "tab:green"}


def write_roofline_plot(results: dict, out: Path) -> Path | None:
    """Fraction of the roofline bound by model shape: one panel per shape, one group of bars per point
    (protocol, batch, prompt + gen), one bar per kind of model (teacher hatched grey, hybrid, pure, and any
    non-default SSM state dtype as its own kind), one colour per kind in every panel.  The bar is the sampled
    measurement (the full run where only that exists); a black diamond marks the full `generate` run, a black
    tick the serial bound, an x at the foot a point that does not fit in memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from thinkfast.benchmarks.shapes import MODELS

    pts = [p for p in results["points"] + results["full"] if p["model"] in MODELS]
    if not any(not p["oom"] for p in pts):
        return None

    def kind_of(p):  # "teacher", "hybrid", "pure", or e.g. "hybrid, bf16 state"
        return MODELS[p["model"]][1] + state_suffix(p)

    def shape_of(p):
        return MODELS[p["model"]][0]

    order = ["teacher", "hybrid", "pure"]
    kinds = sorted({kind_of(p) for p in pts}, key=lambda k: (order.index(k.split(",")[0]), k))
    spare = iter(["tab:orange", "tab:purple", "tab:red", "tab:brown", "tab:olive", "tab:cyan"])
    colors = {k: KIND_COLORS.get(k) or next(spare, "tab:pink") for k in kinds}
    shapes = list(dict.fromkeys(shape_of(p) for p in pts))
    groups = {s: sorted({(p["protocol"], p["batch"], p["prompt"], p["gen"]) for p in pts if shape_of(p) == s})
              for s in shapes}
    fig, axes = plt.subplots(1, len(shapes), squeeze=False, sharey=True,
                             figsize=(min(18, 2.5 + sum(1.3 * len(g) + 0.6 for g in groups.values())), 5.5),
                             gridspec_kw={"width_ratios": [max(1, len(groups[s])) for s in shapes]})
    for ax, shape in zip(axes[0], shapes):
        here = [p for p in pts if shape_of(p) == shape]
        shape_kinds = [k for k in kinds if any(kind_of(p) == k for p in here)]
        width = 0.8 / len(shape_kinds)
        for i, kind in enumerate(shape_kinds):
            for c, group in enumerate(groups[shape]):
                at = [p for p in here if kind_of(p) == kind and (p["protocol"], p["batch"], p["prompt"], p["gen"]) == group]
                if not at:
                    continue
                x = c - 0.4 + width * (i + 0.5)
                fits = [p for p in at if not p["oom"]]
                if not fits:
                    ax.plot(x, 0.02, "x", color=colors[kind], markersize=9, markeredgewidth=2)
                    continue
                full = [p for p in fits if p.get("method") == "full"]
                bar = next((p for p in fits if p.get("method") != "full"), full[0] if full else None)
                ax.bar(x, bar["fraction_of_bound"], width, color=colors[kind], edgecolor="white",
                       hatch="//" if kind.startswith("teacher") else None)
                if bar.get("serial_bound_tokens_per_s"):
                    ax.hlines(bar["serial_bound_tokens_per_s"] / bar["bound_tokens_per_s"], x - width / 2,
                              x + width / 2, colors="black", linewidth=1.6)
                for p in full:
                    ax.plot(x, p["fraction_of_bound"], "D", color="black", markersize=4)
        ax.set_xticks(range(len(groups[shape])))
        ax.set_xticklabels([f"{proto} B{batch}\n{prompt}+{gen}" for proto, batch, prompt, gen in groups[shape]],
                           fontsize=8)
        ax.set_title(shape, fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].set_ylabel("fraction of roofline bound")
    handles = [Patch(facecolor=colors[k], hatch="//" if k.startswith("teacher") else None, edgecolor="white", label=k)
               for k in kinds]
    handles += [Line2D([], [], color="black", linewidth=1.6, label="serial bound / roofline (kernels one after another)"),
                Line2D([], [], marker="D", color="black", linestyle="", markersize=4, label="full generate run"),
                Line2D([], [], marker="x", color="black", linestyle="", markersize=8, label="does not fit")]
    fig.legend(handles=handles, fontsize=8, ncol=min(4, len(handles)), loc="lower center")
    fig.suptitle(f"Decode throughput as a fraction of its roofline bound — {results['gpu']}, {results['date']}",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path = out / "speed_roofline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_markdown(results: dict, out: Path) -> None:
    lines = [
        f"# Decode speed — {results['gpu']}, {results['date']}",
        "",
        f"Command: `{results['command']}`  ",
        f"Protocol set: {results.get('protocol_set', 'full')}"
        + (f" — {results['config']['description']}" if results.get("config", {}).get("description") else "") + "  ",
        f"torch {results['torch']}, transformers {results.get('transformers', '?')}; measured D2D copy "
        f"{results['measured_copy_bandwidth_bytes_per_s'] / 1e12:.2f} TB/s (read+write), bf16 matmul "
        f"{results['measured_bf16_matmul_flops'] / 1e12:.0f} TFLOP/s. Prefill excluded; greedy; ignore_eos.",
        "",
        "![throughput](speed.png)",
        "",
        "| model | protocol | batch | prompt+gen | tok/s | ms/step | bound tok/s | of bound | of serial bound | method "
        "| note |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for p in results["points"] + results["full"]:
        note = p.get("reason", "") + (f" ({p['verified']})" if p.get("verified") else "")
        if p.get("gpu_clocks"):  # full runs: what the GPU's clock did meanwhile (power cap, thermal)
            note = "; ".join(filter(None, (note, gpu_clocks.describe(p["gpu_clocks"]))))
        lines.append(
            f"| {series(p)} | {p['protocol']} | {p['batch']} | {p['prompt']}+{p['gen']} | "
            f"{'OOM' if p['oom'] else _fmt(p['tokens_per_s'])} | {_fmt(p.get('latency_ms_per_step'), '.2f')} | "
            f"{_fmt(p['bound_tokens_per_s'])} | {_fmt(p.get('fraction_of_bound'), '.0%')} | "
            f"{_fmt(p.get('fraction_of_serial_bound'), '.0%')} | {p.get('method', '')} | {note} |"
        )
    lines += ["", "Bound: the roofline (every byte of the step at copy bandwidth, or every matmul flop at the matmul "
                  "rate, whichever is longer). Serial bound: the step's parts one after another, each at its own "
                  "limit (weights' matmuls, KV reads, recurrent state), as its kernels run; the flop-bound matmuls "
                  "cannot hide the attention's KV reads (`roofline.step_parts_seconds`)."]
    rows = results.get("ratios") or []
    if rows:
        lines += ["", "Student / teacher of the same shape at each point: measured throughput ratio beside the "
                      "ratio of their roofline bounds (what the bytes and flops alone predict).", "",
                  "| shape | student | protocol | batch | prompt+gen | method | teacher tok/s | student tok/s | "
                  "ratio | bound ratio | teacher of bound | student of bound |",
                  "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(
                f"| {r['shape']} | {r['student']}{state_suffix(r)} | {r['protocol']} | {r['batch']} | {r['prompt']}+{r['gen']} | "
                f"{r['method']} | {_fmt(r['teacher_tokens_per_s'])} | {_fmt(r['student_tokens_per_s'])} | "
                f"{r['ratio']:.2f}× | {r['bound_ratio']:.2f}× | {r['teacher_fraction_of_bound']:.0%} | "
                f"{r['student_fraction_of_bound']:.0%} |")
    speedups = results.get("ssm_state_speedups") or []
    if speedups:
        lines += ["", "SSM state dtype: each model's throughput with another recurrent-state dtype over its throughput "
                      "with the first one of the run, beside the ratio of the two roofline bounds (the state bytes "
                      "alone). Accuracy is not measured here (docs/engine.md).", "",
                  "| model | state | vs | protocol | batch | prompt+gen | method | tok/s | tok/s (vs) | speed-up | "
                  "bound ratio | of bound | of bound (vs) |",
                  "|---|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in speedups:
            lines.append(
                f"| {r['model']} | {r['ssm_state_dtype']} | {r['versus']} | {r['protocol']} | {r['batch']} | "
                f"{r['prompt']}+{r['gen']} | {r['method']} | {_fmt(r['tokens_per_s'])} | {_fmt(r['base_tokens_per_s'])} | "
                f"{r['speedup']:.2f}× | {r['bound_ratio']:.2f}× | {r['fraction_of_bound']:.0%} | "
                f"{r['base_fraction_of_bound']:.0%} |")
    if (out / "speed_roofline.png").exists():
        lines += ["", "Fraction of the roofline bound, one panel per shape (teacher hatched, beside its students; the "
                      "black tick on a bar is its serial bound over the roofline, a diamond the full `generate` run, "
                      "an x a point that does not fit):", "",
                  "![fraction of roofline by shape](speed_roofline.png)"]
    if results.get("peer"):
        lines += ["", "Peer: HF transformers `generate`, static cache, random weights of the same shape "
                      "(decode-only tok/s = batch × (gen − 1) / (time of gen tokens − time of 1 token); compile "
                      "time excluded). Every route is measured; **the peer** is the fastest route that worked.", "",
                  "| size | route | batch | prompt+gen | tok/s (decode) | tok/s (whole call) | compile s | compiled | "
                  "recompiled in timing | note |",
                  "|---|---|---:|---|---:|---:|---:|---|---|---|"]
        for peer in results["peer"]:
            route = f"**{peer.get('route')}** (the peer)" if peer.get("is_peer") else str(peer.get("route"))
            recompiled = peer.get("recompiled_in_timed_call")
            lines.append(
                f"| {peer['size']} | {route} | {peer['batch']} | {peer.get('prompt')}+{peer.get('gen')} | "
                f"{_fmt(peer.get('tokens_per_s'))} | {_fmt(peer.get('end_to_end_tokens_per_s'))} | "
                f"{_fmt(peer.get('compile_s'), '.1f')} | {peer.get('compiled', '')} | "
                f"{'' if recompiled is None else ('yes, re-timed' if recompiled else 'no')} | "
                f"{'' if peer.get('ok') else str(peer.get('error', ''))[:160]} |")
    if results.get("headline"):
        lines += ["", "Headline figures:", ""]
        lines += [f"- {k}: {v if not isinstance(v, float) else format(v, '.3g')}" for k, v in results["headline"].items()]
    (out / "speed.md").write_text("\n".join(lines) + "\n")
