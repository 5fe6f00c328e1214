"""Final-answer extraction from a model's solution text.

Order: last brace-matched \\boxed{...} / \\fbox{...} (or `\\boxed 5`), then "final answer is ...",
then "#### ...", then the last number in the text. Unit words after a final number are dropped
("The final answer is 18 dollars per day." -> "18"; see `normalize.strip_unit_words`).
"""

from __future__ import annotations

import re

from thinkfast.evaluation.grading.normalize import strip_unit_words

_BOX = re.compile(r"\\(?:boxed|fbox)\s*")
_FINAL = re.compile(r"final answer is[:\s]*", re.I)
_HASH = re.compile(r"####\s*")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _braced(text: str, start: int) -> str | None:
    """Content of the brace group opening at text[start] == '{' (nesting-aware), or None if unbalanced."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif text[i] == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def last_boxed(text: str) -> str | None:
    for match in reversed(list(_BOX.finditer(text))):
        end = match.end()
        if end < len(text) and text[end] == "{":
            content = _braced(text, end)
            if content is not None:
                return content.strip()
        elif end < len(text) and match.group(0).endswith(" "):  # "\boxed 5"
            token = re.match(r"[^\s$]+", text[end:])
            if token:
                return token.group(0)
    return None


def _clean_tail(tail: str) -> str:
    tail = tail.split("\n")[0]
    tail = re.split(r"\.?\s*I hope it is correct", tail, flags=re.I)[0]
    tail = tail.strip().rstrip(".").strip().strip("$").strip().rstrip(".").strip()
    boxed = last_boxed(tail)
    return boxed if boxed is not None else strip_unit_words(tail)


def extract_answer(text: str) -> str | None:
    """The final answer string of `text`, or None when nothing answer-like is found."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    for pattern in (_FINAL, _HASH):
        matches = list(pattern.finditer(text))
        if matches:
            tail = _clean_tail(text[matches[-1].end() :])
            if tail:
                return tail
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].rstrip(",")
    return None
