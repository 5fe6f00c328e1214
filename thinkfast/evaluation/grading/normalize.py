"""Conservative answer normalisation: only rewrites that cannot change an answer's meaning.

Deliberately absent (SPEC §6 false positives): dropping "%" (0.5 vs 50), dropping single letters as
units (5x vs 5), rounding floats, turning brackets into parentheses.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

_SPACING = re.compile(r"\\[!,;:> ]|\\q?quad|\\displaystyle|\\left|\\right|\\big|\\Big")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°|\\degree")
_UNIT_TEXT = re.compile(r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z .]+\}$")  # 10\text{ cm}
_WHOLE_TEXT = re.compile(r"^\\(?:text|textbf|mathrm|mbox)\{(.*)\}$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_PLAIN_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)$")
_FRAC = re.compile(r"^(-?)\\frac\{?(-?\d+)\}?\{?(\d+)\}?$")
_SLASH = re.compile(r"^(-?\d+)/(\d+)$")
_MATH_WORDS = {"pi", "inf", "infty", "infinity", "sqrt", "sin", "cos", "tan", "log", "ln", "exp", "e"}


def normalize_answer(answer: str) -> str:
    s = answer.strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        while s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : len(s) - len(right)].strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SPACING.sub("", s)
    s = _DEGREES.sub("", s)
    s = _UNIT_TEXT.sub("", s.strip())
    whole = _WHOLE_TEXT.match(s.strip())
    if whole:
        s = whole.group(1)
    s = re.sub(r"\s+", "", s).rstrip(".")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    if _PLAIN_NUMBER.match(s):
        try:
            d = Decimal(s).normalize()
            s = format(d, "f")
        except InvalidOperation:
            pass
    return s


def as_fraction(normalized: str) -> Fraction | None:
    """Exact value of a plain number / a/b / \\frac{a}{b}; None for anything else."""
    if _PLAIN_NUMBER.match(normalized):
        return Fraction(Decimal(normalized))
    m = _FRAC.match(normalized)
    if m and (len(m.group(2)) == 1 or "{" in normalized):
        sign = -1 if m.group(1) else 1
        return sign * Fraction(int(m.group(2)), int(m.group(3))) if int(m.group(3)) else None
    m = _SLASH.match(normalized)
    if m and int(m.group(2)):
        return Fraction(int(m.group(1)), int(m.group(2)))
    return None


def is_word(normalized: str) -> bool:
    """A text answer (a name, a word): compared as a string only, never symbolically (Evelyn vs Evelny)."""
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z ]*[A-Za-z]", normalized)) and normalized.lower() not in _MATH_WORDS
