"""gpu_clocks: nvidia-smi's samples summarised, and the logger around a block (a fake nvidia-smi on CPU)."""

import os
import time

from thinkfast.benchmarks import gpu_clocks


def test_summary_leaves_idle_samples_out_and_counts_each_limit():
    lines = ["345, 3201, 77.1, 26, 0x0000000000000001",  # idle: not part of the run
             "1980, 3201, 650.0, 40, 0x0000000000000000",
             "1920, 3201, 699.0, 45, 0x0000000000000004",
             "1770, 3201, 698.0, 46, 0x0000000000000024",  # power cap and SW thermal at once
             "garbage line", ""]
    s = gpu_clocks.summarize(lines)
    assert s["samples"] == 4 and s["busy_samples"] == 3
    assert s["sm_mhz_mean"] == round((1980 + 1920 + 1770) / 3, 1) and s["sm_mhz_min"] == 1770
    assert s["power_w_max"] == 699.0 and s["mem_mhz"] == 3201
    assert s["limits"] == {"sw_power_cap": round(2 / 3, 3), "sw_thermal": round(1 / 3, 3)}
    assert gpu_clocks.describe(s) == "SM 1890 MHz (min 1770), sw_power_cap 67%, sw_thermal 33%"
    assert gpu_clocks.summarize(["nothing here"]) is None and gpu_clocks.describe(None) == ""


def test_log_samples_a_block_through_nvidia_smi(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n"
                    "case \"$*\" in\n"
                    "  *clocks_event_reasons*loop-ms*|*loop-ms*) while true; do "
                    "echo '1920, 3201, 690.5, 44, 0x0000000000000004'; sleep 0.02; done ;;\n"
                    "  *clocks_event_reasons*) echo '0x0000000000000000' ;;\n"
                    "  *) exit 2 ;;\n"
                    "esac\n")
    os.chmod(fake, 0o755)
    with gpu_clocks.ClockLog(0, interval_ms=20, executable=str(fake)) as log:
        time.sleep(0.3)
    assert log.summary is not None and log.summary["samples"] >= 2
    assert log.summary["sm_mhz_mean"] == 1920 and log.summary["limits"] == {"sw_power_cap": 1.0}


def test_log_without_nvidia_smi_records_nothing(tmp_path):
    with gpu_clocks.ClockLog(0, executable=str(tmp_path / "absent")) as log:
        pass
    assert log.summary is None
