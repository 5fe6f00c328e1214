"""What the GPU's clocks did while a timed run ran: nvidia-smi sampled in the background.

    with ClockLog(device_index) as clocks:
        run()
    clocks.summary  # None where nvidia-smi is missing; else SM clock, power and how often each limit was active

Why: a long decode run on an H200 can sit at the board's power limit, where the driver lowers the SM clock
(1,927 MHz on average instead of 1,980 through a 4,096-token hybrid-3B run on 2026-12-02). A short sampled
measurement mostly runs uncapped, so a full run's lower figure is partly the sustained clock, not the engine;
`bench speed` keeps this summary beside each full run so the two can be told apart.
"""

from __future__ import annotations

import shutil
import subprocess

# nvidia-smi's clocks event reasons (bit -> name); "idle" is left out of the limits
REASONS = {0x1: "idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x10: "sync_boost",
           0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clocks"}
FIELDS = ("clocks.sm", "clocks.mem", "power.draw", "temperature.gpu")
REASON_FIELDS = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")  # new name, then the old one


def _float(text: str) -> float | None:
    try:
        return float(text.strip().split()[0])
    except (ValueError, IndexError):
        return None


def summarize(lines: list[str]) -> dict | None:
    """nvidia-smi csv lines (noheader, nounits: sm MHz, mem MHz, W, C, reasons hex) -> a summary, or None."""
    rows = []
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(FIELDS) + 1:
            continue
        sm, mem, power, temp = (_float(p) for p in parts[:4])
        try:
            reasons = int(parts[4], 16)
        except ValueError:
            continue
        if sm is not None:
            rows.append((sm, mem, power, temp, reasons))
    if not rows:
        return None
    busy = [r for r in rows if not r[4] & 0x1] or rows  # samples where the GPU was not idle
    sm = [r[0] for r in busy]
    powers = [r[2] for r in busy if r[2] is not None]
    limits = {}
    for bit, name in REASONS.items():
        if bit == 0x1:
            continue
        share = sum(1 for r in busy if r[4] & bit) / len(busy)
        if share:
            limits[name] = round(share, 3)
    return {"samples": len(rows), "busy_samples": len(busy), "sm_mhz_mean": round(sum(sm) / len(sm), 1),
            "sm_mhz_min": min(sm), "sm_mhz_max": max(sm), "mem_mhz": busy[0][1],
            "power_w_max": max(powers) if powers else None, "limits": limits}


def describe(summary: dict | None) -> str:
    """One line for a report: SM clock and the limits that were active, or '' without a summary."""
    if not summary:
        return ""
    text = f"SM {summary['sm_mhz_mean']:.0f} MHz (min {summary['sm_mhz_min']:.0f})"
    if summary["limits"]:
        text += ", " + ", ".join(f"{name} {share:.0%}" for name, share in summary["limits"].items())
    return text


class ClockLog:
    """Context manager: sample nvidia-smi every `interval_ms` for one GPU while the block runs."""

    def __init__(self, device_index: int = 0, interval_ms: int = 250, executable: str = "nvidia-smi"):
        self.device_index, self.interval_ms, self.executable = device_index, interval_ms, executable
        self.proc = None
        self.summary: dict | None = None

    def _reason_field(self, exe: str) -> str | None:
        for field in REASON_FIELDS:
            probe = subprocess.run([exe, f"--id={self.device_index}", f"--query-gpu={field}", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=20)
            if probe.returncode == 0:
                return field
        return None

    def __enter__(self) -> "ClockLog":
        exe = shutil.which(self.executable)
        field = self._reason_field(exe) if exe else None
        if field:
            query = ",".join((*FIELDS, field))
            self.proc = subprocess.Popen([exe, f"--id={self.device_index}", f"--query-gpu={query}",
                                          "--format=csv,noheader,nounits", f"--loop-ms={self.interval_ms}"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.summary = summarize(out.splitlines())
