"""Conservative answer normalisation: only rewrites that cannot change an answer's meaning.

Removed: math delimiters, LaTeX spacing and sizing (`\\!`, `\\,`, `\\left`, ...), `\\$`, degree marks, the
percent sign (X% grades as X: the sign names the unit asked for), unit text after a number
(`10\\text{ cm}`, `864\\mbox{ inches}^2`) and plain unit words after a number (`18 dollars per day`),
thousands separators of a whole-answer number (`1,800`, `10,\\!080`). Spellings of one thing are unified
(`\\dfrac` -> `\\frac`, `\\mathrm{e}` -> `e`, `\\operatorname{lcm}` -> `\\lcm`, unicode signs).

Deliberately absent (false positives): X% as X/100 as well as X (a gold 0.5 "percent" would then accept
50%), dropping single letters as units (`5x`, `5 m`, `5\\text{ m}` keep their letter: a lone letter may be a
variable), rounding floats, turning brackets into parentheses.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, InvalidOperation

_UNICODE = {
    "−": "-", "–": "-", "·": "\\cdot ", "×": "\\times ", "÷": "\\div ", "π": "\\pi ", "∞": "\\infty ",
    "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "√": "\\sqrt ", "°": "^\\circ", "∪": "\\cup ",
}
_FRAC_VARIANTS = re.compile(r"\\[dtc]frac(?![A-Za-z])")
_BINOM_VARIANTS = re.compile(r"\\[dt]binom(?![A-Za-z])")
_THOUSANDS_SPACE = re.compile(r"(?<=\d),\\!\s*(?=\d{3}(?!\d))")  # 10,\!080 / 11,\! 111
# spacing and sizing: never preceded by a backslash (`\\ ` is a matrix row break, not `\ `)
_SPACING = re.compile(
    r"(?<!\\)\\(?:[!,;:> ]|q?quad(?![A-Za-z])|displaystyle|textstyle|mathstrut|"
    r"[Bb]ig{1,2}[lr]?(?![A-Za-z])|left\.|right\.|left(?![A-Za-z])|right(?![A-Za-z])|middle(?![A-Za-z]))"
)
_DEGREES = re.compile(r"\^\s*(?:\{\s*\\circ\s*\}|\\circ)|\\degree(?![A-Za-z])|\^\s*\{\s*\}")
_PERCENT = re.compile(r"\\%|%")
_DOLLAR = re.compile(r"\\\$")
# one letter in a font/text wrapper is that letter: \mathrm{e}, \text{i}, \operatorname{e}, \mathbf{v}
_WRAPPED_LETTER = re.compile(
    r"\\(?:mathrm|mathit|mathbf|mathsf|mathnormal|textrm|textit|textbf|text|operatorname|boldsymbol|bm|mbox)"
    r"\s*\{\s*([A-Za-z])\s*\}"
)
_OLD_FONT = re.compile(r"\{\s*\\(?:rm|it|bf|sf)\s+([^{}]*?)\s*\}")  # {\rm e} -> \text{e}
_OPERATOR_NAME = re.compile(r"\\(?:operatorname|mathrm|text)\s*\{\s*(lcm|gcd|sinh|cosh|tanh|arcsin|arccos|arctan|"
                            r"sin|cos|tan|cot|sec|csc|log|ln|exp|max|min|det)\s*\}")
# unit text after a number or a closing brace: 10\text{ cm}, 864 \mbox{ inches}^2, \frac{270}7\text{ degrees}
_UNIT_TEXT = re.compile(
    r"(?<=[\d}])\s*\\(?:text|mbox|mathrm|textrm|textnormal)\s*\{\s*[A-Za-z]{2,}\.?(?:[ .\-/]+[A-Za-z]+\.?)*\s*\}"
    r"(?:\s*\^\s*\{?\s*[23]\s*\}?)?\s*$"
)
_WHOLE_TEXT = re.compile(r"^\\(?:text|textbf|textrm|textnormal|mathrm|mbox)\s*\{(.*)\}$", re.S)
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_PLAIN_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)$")

# names that are maths, never words or units
MATH_WORDS = frozenset({
    "pi", "e", "i", "inf", "infty", "infinity", "sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln",
    "lg", "exp", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "lcm", "gcd", "max", "min", "mod", "det",
    "dx", "dy", "dt",
})
# two-letter unit abbreviations; two free letters right after a number are otherwise a product (`2 ab`)
_SHORT_UNITS = frozenset({"cm", "mm", "km", "kg", "mg", "ft", "in", "yd", "mi", "lb", "oz", "hr", "ml", "mL", "am",
                          "pm", "sq", "cc", "kW", "kw"})
# words after a number that change its value or join it to more maths: never dropped as units
_VALUE_WORDS = frozenset({
    "and", "or", "to", "than", "plus", "minus", "times", "over", "divided", "squared", "cubed", "factorial",
    "root", "roots", "power", "hundred", "hundreds", "thousand", "thousands", "million", "millions", "billion",
    "billions", "trillion", "dozen", "dozens", "score", "half", "halves", "third", "thirds", "quarter", "quarters",
    "fourth", "fourths", "fifth", "fifths", "sixth", "sixths", "seventh", "sevenths", "eighth", "eighths", "ninth",
    "ninths", "tenth", "tenths", "hundredth", "hundredths", "thousandth", "thousandths", "point", "more", "less",
    "fewer",
})
_TAIL_TOKEN = re.compile(r"\s*(/|\^\s*\{?\s*[23]\s*\}?|[A-Za-z]+(?:-[A-Za-z]+)*\.?)")


def strip_unit_words(text: str) -> str:
    """`18 dollars per day` -> `18`; `1,800 meters` -> `1,800`; `5 cm^2` -> `5`; `18 ounces of juice` -> `18`.

    The words must follow a number (or a closing brace) after a space, and the first must be a word of three
    or more letters (so plurals and any noun work without a list: eggs, cookies, minutes) or a two-letter
    unit abbreviation (cm, kg). Never dropped: a single letter first (`5 x`, `5 m`: maybe a variable), maths
    names (`2 pi`), and words that change the value (`5 thousand`, `2 thirds`, `3 squared`, `5 and a half`)."""
    m = re.search(r"(?<=[\d}])\s+(?=[A-Za-z])", text)  # the first number followed by a word
    if not m:
        return text
    tail = text[m.end():]
    tokens, pos = [], 0
    while pos < len(tail):
        token = _TAIL_TOKEN.match(tail, pos)
        if not token:
            break
        tokens.append(token.group(1))
        pos = token.end()
    if tail[pos:].strip() not in ("", ".") or not _unit_words(tokens):
        return text
    head = text[: m.start()].rstrip()
    return head if re.search(r"\d", head) else text


def _unit_words(tokens: list[str]) -> bool:
    words = [w.rstrip(".") for w in tokens if w[0].isalpha()]
    if not words:
        return False
    first = words[0]
    if not ((len(first) >= 3 and first.isalpha()) or first in _SHORT_UNITS or "-" in first):
        return False
    for w in words:
        lw = w.lower()
        if lw in MATH_WORDS or lw in _VALUE_WORDS or (len(w) == 1 and lw != "a"):
            return False
    return True


def _strip_delimiters(s: str) -> str:
    s = s.strip()
    changed = True
    while changed:
        changed = False
        for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left) : len(s) - len(right)].strip()
                changed = True
    return s


def normalize_answer(answer: str) -> str:
    """A canonical string for an answer. Equal strings are equal answers; the converse is `is_equivalent`'s job."""
    s = _strip_delimiters(answer)
    if s.count("$") == 1 and not s.count("\\$"):  # `$18` cut from "The final answer is $18"
        s = s.replace("$", "").strip()
    for char, repl in _UNICODE.items():
        if char in s:
            s = s.replace(char, repl)
    s = _FRAC_VARIANTS.sub(r"\\frac", s)
    s = _BINOM_VARIANTS.sub(r"\\binom", s)
    s = _THOUSANDS_SPACE.sub(",", s)
    s = _SPACING.sub(" ", s)
    s = _DEGREES.sub("", s)
    s = _PERCENT.sub("", s)
    s = _DOLLAR.sub("", s)
    s = s.replace("\\emptyset", "\\varnothing")
    s = _OLD_FONT.sub(r"\\text{\1}", s)
    s = _OPERATOR_NAME.sub(r"\\\1 ", s)
    s = _WRAPPED_LETTER.sub(r"\1", s)
    s = _strip_delimiters(s).strip().rstrip(".,;").strip()
    boxed = re.fullmatch(r"\\(?:boxed|fbox)\{(.*)\}", s, re.S)
    if boxed and _balanced(boxed.group(1)):
        s = boxed.group(1).strip()
    s = strip_unit_words(s)
    unit = _UNIT_TEXT.search(s)
    if unit and _unit_words(re.findall(r"[A-Za-z]+", re.sub(r"^\\[A-Za-z]+", "", unit.group(0).strip()))):
        s = s[: unit.start()].strip()
    whole = _WHOLE_TEXT.match(s)
    if whole and "{" not in whole.group(1) and "}" not in whole.group(1):
        s = whole.group(1).strip()
        s = strip_unit_words(s)
    # whitespace carries no meaning, except that it ends a command name: `\cot x` must not become `\cotx`
    if _THOUSANDS.match(s):  # before collapsing spaces: `1, 800` is a list
        s = s.replace(",", "")
    s = _collapse(s).rstrip(".")
    if s.startswith("+") and _PLAIN_NUMBER.match(s):
        s = s[1:]
    if _PLAIN_NUMBER.match(s):
        try:
            # exact: the default context would round to 28 digits and merge distinct long integers
            s = format(Decimal(s).normalize(Context(prec=len(s) + 2)), "f")
        except InvalidOperation:
            pass
        if s == "-0":
            s = "0"
    return s


def _balanced(s: str) -> bool:
    depth = 0
    for i, c in enumerate(s):
        if c in "{}" and (i == 0 or s[i - 1] != "\\"):
            depth += 1 if c == "{" else -1
            if depth < 0:
                return False
    return depth == 0


def _collapse(s: str) -> str:
    """Remove whitespace except the single space that ends a command name before a letter."""
    parts = re.split(r"(\\[A-Za-z]+\s+(?=[A-Za-z]))", s)
    return "".join(p.rstrip() + " " if i % 2 else re.sub(r"\s+", "", p) for i, p in enumerate(parts))


def is_word(normalized: str) -> bool:
    """A text answer (a name, a word): compared as a string only, never symbolically (Evelyn vs Evelny)."""
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z ]*[A-Za-z]", normalized)) and normalized.lower() not in MATH_WORDS
