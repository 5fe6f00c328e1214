"""Answer equivalence: normalised strings -> typed answers (parse.py) -> type-aware exact comparison.

Rules (each chosen to have no false positives; see docs/evaluation.md):
- Types must agree: an equation or inequality never equals a bare value, except an assignment `x = 5`
  (one variable on the left, a constant on the right), which is the value 5; an ordered tuple never equals
  a set; intervals equal only with the same endpoints and the same open/closed ends (`(a,b)` may be read as
  an open interval); a bare comma list is compared as a set (all solutions), against a tuple in order.
- Numbers are compared exactly: decimals are exact rationals (27.0 = 27, 0.5 = 1/2, 0.333 != 1/3). A decimal
  literal with >= MIN_SIG_DIGITS significant digits also equals an exact value it rounds or truncates to at
  its printed precision (0.142857142857143 = 1/7; 0.866 != sqrt(3)/2). Other constants (pi, e, roots) are
  evaluated to 60 digits and must agree to a relative 1e-40: far beyond any rounding, so 1/100! != 1/99!
  and 2 - 1/e != 2 + 1/e however small or large the values are.
- Expressions with variables are equal when their difference vanishes at several random rational points
  (evaluated exactly or to 60 digits): x^2+2x+1 = (x+1)^2, 5 != 5x, x != y.
- Equations are equal when (lhs - rhs) of one is a non-zero constant multiple of the other's
  (3y-x=5 = x-3y=-5); inequalities when the multiple is positive and the strictness is the same
  (x>5 = 5<x, x>5 != x<5, x>5 != x>=5); a one-variable inequality equals the interval it describes.
- Text answers are compared as lower-cased strings (Evelyn != Evelny); a multiple-choice letter `(C)`
  equals `C`.

`fast_verdict` decides in process when both answers are rational numbers, text, or structures of those (no
symbolic work, cannot hang); `is_equivalent` is the full comparison and may be slow on adversarial input,
so `Grader` runs it in worker processes with a hard time-out.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache

import mpmath
import sympy

from thinkfast.evaluation.grading.normalize import is_word, normalize_answer
from thinkfast.evaluation.grading.parse import (
    Expr,
    Interval,
    Matrix,
    Relation,
    Seq,
    Text,
    Union,
    parse_answer,
    words_to_commas,
)

GRADER_VERSION = "2"  # bump when verdicts can change, to invalidate caches

MIN_SIG_DIGITS = 10  # a decimal this precise may stand for an exact value (relative error <= 1e-9)
_DIGITS = 60  # working precision for irrational constants
_REL_TOL = mpmath.mpf("1e-40")
_PROBE_VALUES = [sympy.Rational(p, q) for p, q in
                 ((7, 13), (-11, 17), (23, 19), (-5, 29), (31, 37), (13, 41), (-43, 47), (53, 59), (3, 61),
                  (-67, 71), (73, 79), (83, 89))]


@lru_cache(maxsize=100_000)
def _parsed(normalized: str):
    """The typed answer, or None when the string does not parse."""
    try:
        return parse_answer(words_to_commas(normalized))
    except Exception:  # ParseError, and sympy raises a zoo of types on odd input: no parse, no verdict
        return None


# ---------------------------------------------------------------------------- the cheap subset


def _is_plain(node) -> bool:
    """Rational numbers and text only (comparisons are exact and O(size))."""
    if isinstance(node, Text):
        return True
    if isinstance(node, Expr):
        return bool(node.value.is_Rational) or node.value in (sympy.oo, -sympy.oo)
    if isinstance(node, Seq):
        return all(_is_plain(x) for x in node.items)
    if isinstance(node, Interval):
        return _is_plain(node.lo) and _is_plain(node.hi)
    if isinstance(node, Matrix):
        return all(_is_plain(x) for row in node.rows for x in row)
    if isinstance(node, Union):
        return all(_is_plain(x) for x in node.parts)
    return False


def fast_verdict(gold: str, answer: str | None) -> bool | None:
    """True/False when decidable without symbolic maths, else None."""
    if answer is None or not answer.strip():
        return False
    g, a = normalize_answer(gold), normalize_answer(answer)
    if g == a:
        return True
    if not (_cheap(g) and _cheap(a)):
        return None  # parsing may evaluate powers, factorials, roots: leave it to the time-limited workers
    pg, pa = _parsed(g), _parsed(a)
    if pg is None and pa is None:
        return False  # neither parses: only the normalised strings could match, and they differ
    if pg is not None and pa is not None and _is_plain(pg) and _is_plain(pa):
        return bool(answers_equal(pg, pa))
    return None


# numbers, fractions, brackets, sets, intervals, matrices of those; or a word / choice letter
_CHEAP = re.compile(
    r"(?:[\d.,+\-/()\[\]{}|&\s]|\\[{}\\]|\\(?:frac|infty|cup|pm|mp|varnothing)(?![A-Za-z])"
    r"|\\(?:begin|end)\{[pbB]?matrix\})*"
)


def _cheap(normalized: str) -> bool:
    return len(normalized) <= 500 and (bool(_CHEAP.fullmatch(normalized)) or is_word(normalized)
                                       or bool(re.fullmatch(r"\(?[A-Za-z]\)?", normalized)))


def is_equivalent(gold: str, answer: str | None) -> bool:
    """Full comparison (symmetric in its arguments)."""
    verdict = fast_verdict(gold, answer)
    if verdict is not None:
        return verdict
    pg, pa = _parsed(normalize_answer(gold)), _parsed(normalize_answer(answer or ""))
    if pg is None or pa is None:
        return False
    try:
        return bool(answers_equal(pg, pa))
    except Exception:  # e.g. sympy's PolynomialError: equality was not established
        return False


def is_equivalent_pair(pair: tuple[str, str | None]) -> bool:
    """Picklable one-argument form for worker pools."""
    return is_equivalent(pair[0], pair[1])


# ---------------------------------------------------------------------------- typed comparison


def answers_equal(a, b) -> bool:
    if isinstance(a, Relation) or isinstance(b, Relation):
        return _relation_vs(a, b)
    if isinstance(a, Text) or isinstance(b, Text):
        return _text_equal(a, b)
    if isinstance(a, Expr) and isinstance(b, Expr):
        return expr_equal(a, b)
    for x, y in ((a, b), (b, a)):  # a one-element set or list is its element
        if isinstance(x, Seq) and x.kind in ("set", "list") and len(x.items) == 1 and not isinstance(y, Seq):
            return answers_equal(x.items[0], y)
    if isinstance(a, Seq) and isinstance(b, Seq):
        return _seqs_equal(a, b)
    if isinstance(a, Matrix) or isinstance(b, Matrix):
        return _matrix_vs(a, b)
    if isinstance(a, Union) or isinstance(b, Union):
        if isinstance(a, Union) and isinstance(b, Union) and len(a.parts) == len(b.parts):
            return _same_members(a.parts, b.parts)
        return False
    ia, ib = _as_interval_node(a), _as_interval_node(b)
    if ia is not None and ib is not None:
        return (ia.lo_open == ib.lo_open and ia.hi_open == ib.hi_open
                and expr_equal(ia.lo, ib.lo) and expr_equal(ia.hi, ib.hi))
    return False


def _text_equal(a, b) -> bool:
    if isinstance(a, Text) and isinstance(b, Text):
        return a.value == b.value
    text, other = (a, b) if isinstance(a, Text) else (b, a)
    if isinstance(other, Expr) and isinstance(other.value, sympy.Symbol):
        return other.value.name.lower() == text.value  # multiple choice: (C) = C
    return False


def _as_interval_node(node) -> Interval | None:
    if isinstance(node, Interval):
        return node
    if isinstance(node, Seq) and node.kind == "tuple" and len(node.items) == 2 and all(isinstance(x, Expr) for x in node.items):
        return Interval(node.items[0], node.items[1], True, True)  # (a, b): an open interval or a pair
    return None


def _seqs_equal(a: Seq, b: Seq) -> bool:
    kinds = {a.kind, b.kind}
    if "tuple" in kinds:
        if "set" in kinds:
            return False  # an ordered tuple is not a set
        return len(a.items) == len(b.items) and all(answers_equal(x, y) for x, y in zip(a.items, b.items))
    return _same_members(a.items, b.items)


def _same_members(xs, ys) -> bool:
    return all(any(answers_equal(x, y) for y in ys) for x in xs) and all(any(answers_equal(x, y) for x in xs) for y in ys)


def _matrix_vs(a, b) -> bool:
    if isinstance(a, Matrix) and isinstance(b, Matrix):
        if len(a.rows) != len(b.rows) or len(a.rows[0]) != len(b.rows[0]):
            return False
        return all(expr_equal(x, y) for ra, rb in zip(a.rows, b.rows) for x, y in zip(ra, rb))
    matrix, other = (a, b) if isinstance(a, Matrix) else (b, a)
    if isinstance(other, Seq) and other.kind == "tuple" and (len(matrix.rows) == 1 or len(matrix.rows[0]) == 1):
        flat = [x for row in matrix.rows for x in row]  # a vector written as a tuple
        return len(flat) == len(other.items) and all(answers_equal(x, y) for x, y in zip(flat, other.items))
    return False


# ---------------------------------------------------------------------------- relations


def _free(node) -> set:
    if isinstance(node, Expr):
        return set(node.value.free_symbols)
    if isinstance(node, (Seq, Union)):
        items = node.items if isinstance(node, Seq) else node.parts
        return set().union(*(_free(x) for x in items)) if items else set()
    if isinstance(node, Interval):
        return _free(node.lo) | _free(node.hi)
    if isinstance(node, Matrix):
        return set().union(*(_free(x) for row in node.rows for x in row))
    if isinstance(node, Relation):
        return set().union(*(_free(x) for x in node.sides))
    return set()


def _assignment(rel: Relation):
    """(variables, value) for `x = 5`, `x \\in [1,2]`, `(x, y) = (1, 2)`; None for any other relation."""
    if len(rel.ops) != 1 or rel.ops[0] not in ("=", "in"):
        return None
    lhs, rhs = rel.sides
    if isinstance(lhs, Expr) and isinstance(lhs.value, sympy.Symbol):
        names = (lhs.value,)
    elif isinstance(lhs, Seq) and lhs.kind == "tuple" and all(
            isinstance(x, Expr) and isinstance(x.value, sympy.Symbol) for x in lhs.items):
        names = tuple(x.value for x in lhs.items)
    else:
        return None
    if _free(rhs):
        return None  # y = 2x + 3 is an equation, not a value
    return names, rhs


def _relation_vs(a, b) -> bool:
    if isinstance(a, Relation) and isinstance(b, Relation):
        return _relations_equal(a, b)
    rel, other = (a, b) if isinstance(a, Relation) else (b, a)
    assigned = _assignment(rel)
    if assigned is not None:
        return answers_equal(assigned[1], other)
    interval = _relation_interval(rel)
    if interval is not None and isinstance(other, (Interval, Seq, Union)):
        return answers_equal(interval, other)
    return False  # an equation or inequality is never a bare value


def _relations_equal(a: Relation, b: Relation) -> bool:
    sa, sb = _assignment(a), _assignment(b)
    if sa is not None and sb is not None:
        return sa[0] == sb[0] and answers_equal(sa[1], sb[1])
    atoms_a, atoms_b = _atoms(a), _atoms(b)
    if atoms_a is not None and atoms_b is not None and len(atoms_a) == len(atoms_b):
        if all(any(_atoms_equal(x, y) for y in atoms_b) for x in atoms_a) and \
                all(any(_atoms_equal(x, y) for x in atoms_a) for y in atoms_b):
            return True
    ia = _relation_interval(a) if sa is None else (sa[1] if len(sa[0]) == 1 else None)
    ib = _relation_interval(b) if sb is None else (sb[1] if len(sb[0]) == 1 else None)
    if ia is not None and ib is not None and _free(a) == _free(b):
        return answers_equal(ia, ib)
    return False


_NORMAL = {"=": ("eq", 1), "!=": ("ne", 1), ">": ("gt", 1), "<": ("gt", -1), ">=": ("ge", 1), "<=": ("ge", -1)}


def _atoms(rel: Relation):
    """Each link of a chain as (kind, d) meaning d = 0, d != 0, d > 0 or d >= 0; None if not all expressions."""
    if not all(isinstance(x, Expr) for x in rel.sides) or any(op not in _NORMAL for op in rel.ops):
        return None
    out = []
    for op, lhs, rhs in zip(rel.ops, rel.sides, rel.sides[1:]):
        kind, sign = _NORMAL[op]
        out.append((kind, (lhs.value - rhs.value) * sign))
    return out


def _atoms_equal(x, y) -> bool:
    (kx, dx), (ky, dy) = x, y
    if kx != ky:
        return False
    ratio = _constant_ratio(dx, dy)
    if ratio is None:
        return False
    if kx in ("eq", "ne"):
        return ratio != 0
    return bool(ratio > 0)


def _constant_ratio(dx: sympy.Basic, dy: sympy.Basic):
    """c with dx = c * dy identically (c a non-zero number), else None."""
    if dx == 0 or dy == 0:
        return sympy.Integer(1) if dx == dy else None
    q = sympy.cancel(sympy.together(dx / dy))
    if not q.free_symbols:
        return q if q.is_number and q != 0 and q.is_finite else None
    symbols = sorted(dx.free_symbols | dy.free_symbols, key=str)
    values = []
    for point in _points(symbols):
        vx, vy = _evaluate(dx, point), _evaluate(dy, point)
        if vx is None or vy is None or vy == 0:
            continue
        with mpmath.workdps(_DIGITS):
            values.append(vx / vy)
    if len(values) < 3 or not all(_close(v, values[0]) for v in values):
        return None
    c = values[0]
    if c == 0 or abs(c.imag) > _REL_TOL * abs(c):
        return None
    return sympy.Float(c.real, 30)


def _relation_interval(rel: Relation) -> Interval | None:
    """`x > 5` -> (5, oo); `1 < x <= 2` -> (1, 2]; None unless one variable is bounded by constants."""
    if not all(isinstance(x, Expr) for x in rel.sides) or any(op not in ("<", ">", "<=", ">=") for op in rel.ops):
        return None
    variables = {s.value for s in rel.sides if isinstance(s.value, sympy.Symbol)}
    if len(variables) != 1:
        return None
    var = variables.pop()
    lo, hi = Expr(-sympy.oo), Expr(sympy.oo)
    lo_open = hi_open = True
    for op, lhs, rhs in zip(rel.ops, rel.sides, rel.sides[1:]):
        if lhs.value == var and not rhs.value.free_symbols:
            bound, direction = rhs, op
        elif rhs.value == var and not lhs.value.free_symbols:
            bound, direction = lhs, {"<": ">", ">": "<", "<=": ">=", ">=": "<="}[op]
        else:
            return None
        if direction in (">", ">="):
            lo, lo_open = bound, direction == ">"
        else:
            hi, hi_open = bound, direction == "<"
    return Interval(lo, hi, lo_open, hi_open)


# ---------------------------------------------------------------------------- expressions


def expr_equal(a: Expr, b: Expr) -> bool:
    x, y = a.value, b.value
    if a.base is not None and b.base is not None and a.base != b.base:
        return False
    if x == y:
        return True
    if not isinstance(x, sympy.Expr) or not isinstance(y, sympy.Expr):
        return False
    if not x.free_symbols and not y.free_symbols:
        return _numbers_equal(a, b)
    return _identically_equal(x, y)


def _numbers_equal(a: Expr, b: Expr) -> bool:
    x, y = a.value, b.value
    if x.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan) or y.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
        return False  # infinities are equal only when identical (checked by the caller)
    if (a.decimal is None) != (b.decimal is None):  # one side is a printed decimal, the other exact
        decimal, exact = (a.decimal, y) if a.decimal is not None else (b.decimal, x)
        return _decimal_stands_for(decimal, exact)
    if x.is_Rational and y.is_Rational:
        return False  # exact and different
    vx, vy = _evaluate(x, {}), _evaluate(y, {})
    if vx is None or vy is None:
        return False
    return _close(vx, vy)


def _decimal_stands_for(decimal: Decimal, exact: sympy.Expr) -> bool:
    """The printed decimal is `exact` rounded or truncated to its last digit, and precise enough to say so."""
    if sympy.Rational(str(decimal)) == exact:
        return True
    sign, digits, exponent = decimal.as_tuple()
    significant = len("".join(map(str, digits)).lstrip("0"))
    if significant < MIN_SIG_DIGITS or exponent >= 0:
        return False
    places = -exponent
    if not exact.is_real:
        return False
    scaled = exact * sympy.Integer(10) ** places
    low, high = sympy.floor(scaled), sympy.ceiling(scaled)
    if not (low.is_Integer and high.is_Integer):
        return False
    printed = int(decimal.scaleb(places))
    return int(low) <= printed <= int(high)


def _evaluate(expr: sympy.Basic, point: dict):
    """A 60-digit complex value (mpmath mpc) of expr at point, or None where undefined."""
    try:
        value = expr.xreplace(point) if point else expr
        number = value.evalf(_DIGITS)
        if not number.is_number or number.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
            return None
        re_part, im_part = number.as_real_imag()
        with mpmath.workdps(_DIGITS):
            return mpmath.mpc(mpmath.mpf(sympy.Float(re_part, _DIGITS)._mpf_),
                              mpmath.mpf(sympy.Float(im_part, _DIGITS)._mpf_))
    except (TypeError, ValueError, ZeroDivisionError, AttributeError, ArithmeticError, RecursionError):
        return None


def _close(vx, vy) -> bool:
    """Equal to a relative 1e-40 (both values carry 60 digits)."""
    with mpmath.workdps(_DIGITS):
        scale = max(abs(vx), abs(vy))
        return bool(scale == 0 or abs(vx - vy) <= _REL_TOL * scale)


def _points(symbols):
    """Four rational points, mixing signs and magnitudes below and above 1 (so |x| != x, sqrt(x^2) != x)."""
    n = len(_PROBE_VALUES)
    for k in range(4):
        yield {s: abs(_PROBE_VALUES[(7 * k + 5 * j) % n]) * (k + 1) * (-1) ** (k + j) for j, s in enumerate(symbols)}


def _identically_equal(x: sympy.Expr, y: sympy.Expr) -> bool:
    """x - y vanishes at random rational points (and is not just undefined everywhere)."""
    symbols = sorted(x.free_symbols | y.free_symbols, key=str)
    checked = 0
    for point in _points(symbols):
        vx, vy = _evaluate(x, point), _evaluate(y, point)
        if vx is None and vy is None:
            continue
        if vx is None or vy is None or not _close(vx, vy):
            return False
        checked += 1
    return checked >= 2
