"""The equivalence cascade: normalised strings -> math-verify -> sympy tie-breaker.

`fast_verdict` is the cheap in-process part (strings, exact numbers); `is_equivalent` is the full
cascade and may be slow or hang on adversarial input, so `Grader` runs it in worker processes.
"""

from __future__ import annotations

import re

from thinkfast.evaluation.grading.normalize import as_fraction, is_word, normalize_answer

GRADER_VERSION = "1"  # bump when verdicts can change, to invalidate caches


def fast_verdict(gold: str, answer: str | None) -> bool | None:
    """True/False when decidable without symbolic maths, else None."""
    if answer is None or not answer.strip():
        return False
    g, a = normalize_answer(gold), normalize_answer(answer)
    if g == a:
        return True
    if is_word(g) or is_word(a):
        return g.lower() == a.lower()
    fg, fa = as_fraction(g), as_fraction(a)
    if fg is not None and fa is not None:
        return fg == fa  # exact: no float tolerance (0.333 != 1/3)
    return None


def _math_verify(gold: str, answer: str) -> bool | None:
    """math-verify on `$gold$` and `$answer$`; None when either side does not parse."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    parsed_gold = parse(f"${gold}$", extraction_config=config)
    parsed_answer = parse(f"${answer}$", extraction_config=config)
    if not parsed_gold or not parsed_answer:
        return None
    return bool(verify(parsed_gold, parsed_answer))


_LATEX_TO_TEXT = [
    (re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}"), r"((\1)/(\2))"),
    (re.compile(r"\\sqrt\{([^{}]*)\}"), r"sqrt(\1)"),
    (re.compile(r"\\cdot|\\times"), "*"),
    (re.compile(r"\\pi"), "pi"),
    (re.compile(r"\^"), "**"),
    (re.compile(r"[{}]"), ""),
]


def _sympy_equal(gold: str, answer: str) -> bool | None:
    """Exact symbolic check (floats made rational, so no tolerance); None when either side does not parse."""
    import sympy
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application,
        parse_expr,
        rationalize,
        standard_transformations,
    )

    transformations = standard_transformations + (implicit_multiplication_application, rationalize)

    def to_expr(text: str):
        text = normalize_answer(text)
        for pattern, repl in _LATEX_TO_TEXT:
            text = pattern.sub(repl, text)
        if "\\" in text or "=" in text or "<" in text or ">" in text or "," in text:
            return None
        try:
            return parse_expr(text, transformations=transformations, evaluate=True)
        except Exception:
            return None

    eg, ea = to_expr(gold), to_expr(answer)
    if eg is None or ea is None or not isinstance(eg, sympy.Expr) or not isinstance(ea, sympy.Expr):
        return None
    try:
        return bool(sympy.simplify(eg - ea) == 0)
    except Exception:
        return None


def is_equivalent(gold: str, answer: str | None) -> bool:
    """Full cascade. Stops at the first stage that decides."""
    verdict = fast_verdict(gold, answer)
    if verdict is not None:
        return verdict
    assert answer is not None
    try:
        verdict = _math_verify(gold, answer)
    except Exception:
        verdict = None
    if verdict is not None:
        return verdict
    return bool(_sympy_equal(gold, answer))


def is_equivalent_pair(pair: tuple[str, str | None]) -> bool:
    """Picklable one-argument form for worker pools."""
    return is_equivalent(pair[0], pair[1])
