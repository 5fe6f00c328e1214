"""Benchmark problems (GSM8K, MATH-500, AIME24, AMC23) from local JSONL files or the hub.

Every loader yields `Problem(id, question, gold, source)`. Bad rows are never dropped silently:
`on_error="raise"` (default) stops at the first one with its line number; `on_error="skip"` skips
them and lists them in `ProblemSet.skipped` so the caller can report the count.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from thinkfast.errors import ThinkfastError

OnError = Literal["raise", "skip"]


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    gold: str  # reference answer as a string (LaTeX for MATH, integer string for GSM8K/AIME/AMC)
    source: str  # dataset name ("gsm8k", "math500", ..., "synthetic")


@dataclass
class ProblemSet:
    name: str
    problems: list[Problem]
    skipped: list[str] = field(default_factory=list)  # "line N: reason" for each skipped row

    def __len__(self) -> int:
        return len(self.problems)


@dataclass(frozen=True)
class _Known:
    filename: str  # local file, "{split}" substituted
    hub: str  # hub dataset id
    hub_config: str | None = None


KNOWN: dict[str, _Known] = {
    "gsm8k": _Known("gsm8k_{split}.jsonl", "openai/gsm8k", "main"),
    "math500": _Known("math500_{split}.jsonl", "HuggingFaceH4/MATH-500"),
    "aime24": _Known("aime24_{split}.jsonl", "math-ai/aime24"),
    "amc23": _Known("amc23_{split}.jsonl", "math-ai/amc23"),
}

_GSM_GOLD = re.compile(r"####\s*(.+?)\s*$", re.S)


def _gold_string(value: Any) -> str | None:
    """Gold as a string; floats holding integers (AMC's 27.0) become "27"."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def parse_row(row: Any, kind: str, index: int) -> Problem:
    """One JSON row of dataset `kind` -> Problem; raises ValueError naming what is wrong."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    question = row.get("question") if kind == "gsm8k" else (row.get("problem") or row.get("question"))
    if not isinstance(question, str) or not question.strip():
        raise ValueError("no question text (field 'question' or 'problem')")
    if kind == "gsm8k":
        answer = row.get("answer")
        if not isinstance(answer, str):
            raise ValueError("missing gold: no 'answer' string")
        match = _GSM_GOLD.search(answer)
        gold = match.group(1).replace(",", "").strip() if match else None
        if not gold:
            raise ValueError("missing gold: GSM8K 'answer' has no '#### N' line")
    else:
        gold = _gold_string(row.get("answer"))
        if gold is None:
            raise ValueError(f"missing gold: 'answer' is {row.get('answer')!r}")
    pid = row.get("id", row.get("unique_id"))
    pid = f"{kind}-{pid}" if pid is not None else f"{kind}-{index}"
    return Problem(id=str(pid), question=question.strip(), gold=gold, source=kind)


def _infer_kind(path: Path) -> str:
    stem = path.name.lower()
    for name in KNOWN:
        if stem.startswith(name):
            return name
    return "generic"


def _collect(rows: Iterable[tuple[int, Any]], kind: str, name: str, on_error: OnError, where: str) -> ProblemSet:
    problems: list[Problem] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for line_no, row in rows:
        try:
            if isinstance(row, Exception):
                raise ValueError(f"not valid JSON ({row})")
            problem = parse_row(row, kind, len(problems) + len(skipped))
            if problem.id in seen:
                raise ValueError(f"duplicate id {problem.id!r}")
        except ValueError as err:
            if on_error == "raise":
                raise ThinkfastError(
                    f"{where} line {line_no}: {err}. Fix the row, or pass on_error='skip' to skip bad rows "
                    "(they are counted and reported)."
                ) from None
            skipped.append(f"line {line_no}: {err}")
            continue
        seen.add(problem.id)
        problems.append(problem)
    if not problems:
        detail = f" ({len(skipped)} bad rows skipped, first: {skipped[0]})" if skipped else ""
        raise ThinkfastError(f"{where} holds no usable problems{detail}; check the path and the file layout")
    return ProblemSet(name=name, problems=problems, skipped=skipped)


def _read_jsonl(path: Path) -> Iterable[tuple[int, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                yield line_no, err


def load_jsonl(path: str | os.PathLike, kind: str | None = None, on_error: OnError = "raise") -> ProblemSet:
    """Problems from a local JSONL file; `kind` (gsm8k/math500/aime24/amc23/generic) defaults from the name."""
    from thinkfast.config import find_data_path

    path = find_data_path(path, "dataset file")  # relative: working directory, then $THINKFAST_DATA, ../shared/data
    if not path.is_file():
        raise ThinkfastError(f"dataset file {path} is not a file")
    if path.stat().st_size == 0:
        raise ThinkfastError(f"dataset file {path} is empty")
    kind = kind or _infer_kind(path)
    if kind not in KNOWN and kind != "generic":
        raise ThinkfastError(f"unknown dataset layout {kind!r}; use one of {sorted(KNOWN) + ['generic']}")
    return _collect(_read_jsonl(path), kind, kind if kind != "generic" else path.stem, on_error, str(path))


def _load_hub(name: str, split: str, on_error: OnError) -> ProblemSet:
    known = KNOWN[name]
    try:
        import datasets  # lazy: optional dependency (pip install 'thinkfast[hub]')
    except ImportError as err:
        raise ThinkfastError(
            f"dataset {name!r} was not found locally and the 'datasets' package is missing; "
            "set THINKFAST_DATA / data_dir to a folder with the JSONL files, or pip install 'thinkfast[hub]'"
        ) from err
    try:
        rows = datasets.load_dataset(known.hub, known.hub_config, split=split)
    except Exception as err:  # network, unknown split, ...
        raise ThinkfastError(f"could not load {known.hub} split {split!r} from the hub: {err}") from err
    return _collect(((i + 1, dict(r)) for i, r in enumerate(rows)), name, name, on_error, f"hub:{known.hub}")


def data_dir_from_env(data_dir: str | os.PathLike | None = None) -> Path | None:
    root = data_dir or os.environ.get("THINKFAST_DATA")
    return Path(root) if root else None


def load_problems(
    name_or_path: str,
    data_dir: str | os.PathLike | None = None,
    split: str = "test",
    limit: int | None = None,
    on_error: OnError = "raise",
) -> ProblemSet:
    """Load by name (local `data_dir` / $THINKFAST_DATA first, else the hub) or by JSONL path."""
    if name_or_path.endswith(".jsonl") or os.sep in name_or_path:
        result = load_jsonl(name_or_path, on_error=on_error)
    elif name_or_path in KNOWN:
        root = data_dir_from_env(data_dir)
        local = root / KNOWN[name_or_path].filename.format(split=split) if root else None
        if local is not None and local.is_file():
            result = load_jsonl(local, kind=name_or_path, on_error=on_error)
        else:
            result = _load_hub(name_or_path, split, on_error)
    else:
        raise ThinkfastError(
            f"unknown dataset {name_or_path!r}; use one of {sorted(KNOWN)}, 'synthetic', or a path to a .jsonl file"
        )
    if limit is not None:
        result.problems = result.problems[:limit]
    return result
