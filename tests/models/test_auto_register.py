"""`import thinkfast` alone is enough for AutoModelForCausalLM to load a saved student, and it stays
light (no torch, no transformers).  Each check runs in a fresh interpreter for a clean import state."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from thinkfast.models import ThinkfastConfig, ThinkfastForCausalLM

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    config = ThinkfastConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                             layer_mixers=["mamba1", "attention"])
    path = tmp_path_factory.mktemp("student") / "tiny"
    ThinkfastForCausalLM(config).save_pretrained(path)
    return str(path)


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("transformers_first", [False, True])
def test_auto_model_loads_a_student_after_import_thinkfast(student_dir, transformers_first):
    first = "import transformers\n" if transformers_first else ""
    out = _python(first + (
        "import sys, thinkfast\n"
        f"assert thinkfast.__file__.startswith({str(ROOT)!r}), thinkfast.__file__\n"
        "from transformers import AutoModelForCausalLM\n"
        f"model = AutoModelForCausalLM.from_pretrained({student_dir!r})\n"
        "print(type(model).__name__, model.config.layer_mixers)\n"))
    assert "ThinkfastForCausalLM ['mamba1', 'attention']" in out


def test_import_thinkfast_stays_light():
    out = _python("import sys, thinkfast\nprint('torch' in sys.modules, 'transformers' in sys.modules)\n")
    assert out.split() == ["False", "False"]
