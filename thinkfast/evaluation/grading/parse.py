"""A normalised answer string -> a typed answer: text, expression, relation, interval, union, tuple, set,
bare list, matrix.

The type is part of the answer: `(4,2)` is an ordered pair and `\\{2,4\\}` a set, `3y-x=5` an equation and
`5` a value, `(0,9)` and `[0,9)` different intervals. Expressions are parsed by a small recursive-descent
LaTeX parser into exact sympy objects: decimals become exact rationals (a decimal literal remembers its
printed digits, see `Expr.decimal`), `e`/`\\mathrm{e}` is Euler's number and `i` the imaginary unit, and
nothing is evaluated approximately. Numbers beyond `SIZE_LIMIT_BITS` (2^{2^{100}}, 10^6!) are refused, so
a parse and an exact comparison finish in bounded time. Anything the parser does not understand raises
`ParseError` (never a partial parse).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

import sympy

from thinkfast.evaluation.grading.normalize import is_word

SIZE_LIMIT_BITS = 1_000_000  # numbers larger than 2^this are refused (not comparable exactly in bounded time)
MAX_FACTORIAL = 20_000  # 20000! has ~260k bits
MAX_SYMBOLIC_EXPONENT = 10_000  # x^{10^{10}} cannot be evaluated at a probe point
MAX_LENGTH = 2_000  # longer answers are not parsed (graded by string only)


class ParseError(ValueError):
    pass


# ---------------------------------------------------------------------------- typed answers


@dataclass(frozen=True)
class Text:
    value: str  # lower-cased


@dataclass(frozen=True)
class Expr:
    value: sympy.Basic
    decimal: Decimal | None = None  # set when the expression is one decimal literal with a fractional part
    base: int | None = None  # set for a numeral with a base subscript (52_8: value 52, base 8)


@dataclass(frozen=True)
class Relation:
    ops: tuple[str, ...]  # one of = < > <= >= != in, between consecutive sides
    sides: tuple  # answers (Expr, or Seq/Interval for `=`/`in`)


@dataclass(frozen=True)
class Interval:
    lo: Expr
    hi: Expr
    lo_open: bool
    hi_open: bool


@dataclass(frozen=True)
class Union:
    parts: tuple


@dataclass(frozen=True)
class Seq:
    kind: str  # "tuple" (parenthesised, ordered), "set" (\{...\}), "list" (bare commas)
    items: tuple


@dataclass(frozen=True)
class Matrix:
    rows: tuple  # tuple of tuples of Expr


# ---------------------------------------------------------------------------- structure


_REL_TOKENS = [
    ("\\leq", "<="), ("\\geq", ">="), ("\\neq", "!="), ("\\le", "<="), ("\\ge", ">="), ("\\ne", "!="),
    ("\\lt", "<"), ("\\gt", ">"), ("\\in", "in"), ("<=", "<="), (">=", ">="), ("!=", "!="), ("=", "="),
    ("<", "<"), (">", ">"),
]
_MATRIX = re.compile(r"^\\begin\{([pbBvV]?matrix|array)\}(?:\{[lcr|]*\})?(.*)\\end\{\1\}$", re.S)
_CHOICE = re.compile(r"^\(?([A-Ea-e])\)$|^\(([A-Ea-e])\)?$")
_MIXED = re.compile(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")
_BASE = re.compile(r"^(\d+)_\{?(\d+)\}?$")


def _scan(s: str):
    """Yield (index, char, depth) over s, tracking (), [], {} and \\{ \\} nesting; `\\` escapes skipped."""
    depth = 0
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            if s.startswith("\\{", i) or s.startswith("\\langle", i):
                depth += 1
                yield i, c, depth - 1
                i += 2 if s[i + 1] == "{" else 7
                continue
            if s.startswith("\\}", i) or s.startswith("\\rangle", i):
                depth -= 1
                yield i, c, depth
                i += 2 if s[i + 1] == "}" else 7
                continue
            m = re.match(r"\\(?:[A-Za-z]+|.)", s[i:])
            yield i, c, depth
            i += len(m.group(0)) if m else 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        yield i, c, depth
        i += 1


def _split_top(s: str, sep: str) -> list[str]:
    """Split on `sep` (',' or '\\cup' or '&' or '\\\\') at nesting depth 0."""
    parts, last = [], 0
    for i, c, depth in _scan(s):
        if depth == 0 and s.startswith(sep, i) and (sep != "\\cup" or not s[i + 4 : i + 5].isalpha()):
            if sep == "\\\\" and c != "\\":
                continue
            parts.append(s[last:i])
            last = i + len(sep)
    parts.append(s[last:])
    return parts


def _split_relations(s: str) -> tuple[list[str], list[str]]:
    sides, ops, last = [], [], 0
    skip_to = -1
    for i, c, depth in _scan(s):
        if i < skip_to or depth != 0:
            continue
        for token, op in _REL_TOKENS:
            if s.startswith(token, i) and not (token[0] == "\\" and s[i + len(token) : i + len(token) + 1].isalpha()):
                sides.append(s[last:i])
                ops.append(op)
                last = skip_to = i + len(token)
                break
    sides.append(s[last:])
    return sides, ops


def _matching_close(s: str, open_index: int) -> int:
    """Index of the bracket closing the one at open_index (any of ) ] for intervals), or -1."""
    depth = 0
    for i, c, d in _scan(s):
        if i < open_index:
            continue
        if c in "([{" or (c == "\\" and (s.startswith("\\{", i) or s.startswith("\\langle", i))):
            depth += 1
        elif c in ")]}" or (c == "\\" and (s.startswith("\\}", i) or s.startswith("\\rangle", i))):
            depth -= 1
            if depth == 0:
                return i
    return -1


def parse_answer(s: str):
    """A typed answer for the normalised string s (see `normalize_answer`)."""
    if not s or len(s) > MAX_LENGTH:
        raise ParseError("empty or too long")
    return _parse_node(s)


def _parse_node(s: str):
    s = s.strip()
    if not s:
        raise ParseError("empty part")
    # text: a name or word(s), a multiple-choice letter
    bare = re.sub(r"^\\text\{(.*)\}$", r"\1", s)
    choice = _CHOICE.match(bare)
    if choice:
        return Text((choice.group(1) or choice.group(2)).lower())
    if bare != s and re.fullmatch(r"[A-Za-z][A-Za-z ,'\-]*", bare):
        return Text(re.sub(r"\s+", "", bare).lower())
    if is_word(s):
        return Text(s.lower())
    matrix = _MATRIX.match(s)
    if matrix:
        return _parse_matrix(matrix.group(2))
    # unions of intervals/sets
    parts = _split_top(s, "\\cup")
    if len(parts) > 1:
        return Union(tuple(_parse_node(p) for p in parts))
    # bare lists (commas at depth 0; `and`/`or` words were turned into commas by the caller)
    items = _split_top(s, ",")
    if len(items) > 1:
        return Seq("list", tuple(_parse_items(items)))
    # relations and membership
    sides, ops = _split_relations(s)
    if ops:
        nodes = tuple(_parse_node(x) for x in sides)
        return Relation(tuple(ops), nodes)
    # bracketed: tuple / interval / set
    if s.startswith("\\{") and _matching_close(s, 0) == len(s) - 2:
        inner = s[2:-2]
        return Seq("set", tuple(_parse_items(_split_top(inner, ","))) if inner.strip() else ())
    if s.startswith("\\langle") and s.endswith("\\rangle") and _matching_close(s, 0) == len(s) - 7:
        return Seq("tuple", tuple(_parse_items(_split_top(s[7:-7], ","))))
    if s[0] in "([" and s[-1] in ")]" and _matching_close(s, 0) == len(s) - 1:
        inner = _split_top(s[1:-1], ",")
        if len(inner) == 2 and not (s[0] == "(" and s[-1] == ")"):
            lo, hi = _parse_expr_node(inner[0]), _parse_expr_node(inner[1])
            return Interval(lo, hi, s[0] == "(", s[-1] == ")")
        if len(inner) >= 2:
            if s[0] != "(" or s[-1] != ")":
                raise ParseError("bracketed list")
            return Seq("tuple", tuple(_parse_items(inner)))
    if "\\pm" in s or "\\mp" in s:
        return Seq("list", tuple(_parse_items([s])))
    if s == "\\varnothing":
        return Seq("set", ())
    return _parse_expr_node(s)


def _parse_items(items: list[str]) -> list:
    """Parse list/set/tuple items; `a \\pm b` expands to its two values."""
    out = []
    for item in items:
        item = item.strip()
        if "\\pm" in item or "\\mp" in item:
            for sign in ("+", "-"):
                other = "-" if sign == "+" else "+"
                out.append(_parse_expr_node(item.replace("\\pm", sign).replace("\\mp", other)))
        else:
            out.append(_parse_node(item))
    return out


def _parse_matrix(body: str) -> Matrix:
    rows = [r for r in _split_top(body, "\\\\")]
    if rows and not rows[-1].strip():
        rows = rows[:-1]
    parsed = tuple(tuple(_parse_expr_node(cell) for cell in _split_top(row, "&")) for row in rows)
    if not parsed or len({len(r) for r in parsed}) != 1:
        raise ParseError("ragged matrix")
    return Matrix(parsed)


def _parse_expr_node(s: str) -> Expr:
    s = s.strip()
    if re.fullmatch(r"-?(?:\d+\.\d*|\.\d+)", s):
        d = Decimal(s)
        return Expr(sympy.Rational(str(d)), d)
    m = _MIXED.match(s)
    if m and int(m.group(3)) < int(m.group(4)):  # 1\frac{4}{5}: a mixed number (MATH convention)
        value = int(m.group(2)) + sympy.Rational(int(m.group(3)), int(m.group(4)))
        return Expr(-value if m.group(1) else value)
    m = _BASE.match(s)
    if m:  # 52_8: digits in base 8, graded by their digits (52 matches; 52_{10} does not)
        return Expr(sympy.Integer(int(m.group(1))), base=int(m.group(2)))
    return Expr(LatexParser(s).parse())


# ---------------------------------------------------------------------------- expressions

_FUNCTIONS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec, "csc": sympy.csc,
    "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan, "sinh": sympy.sinh, "cosh": sympy.cosh,
    "tanh": sympy.tanh, "ln": sympy.log, "exp": sympy.exp, "log": sympy.log, "lg": lambda x: sympy.log(x, 10),
}
_MULTI_FUNCTIONS = {"gcd": sympy.gcd, "lcm": sympy.lcm, "max": sympy.Max, "min": sympy.Min}
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
    "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega",
    "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
}
_BARE_FUNCTIONS = ("arcsin", "arccos", "arctan", "sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp")
_WRAPPERS = {"text", "mathrm", "mathit", "mathbf", "mathsf", "operatorname", "textrm", "textit", "textbf",
             "boldsymbol", "bm", "mbox", "vec", "overrightarrow", "hat", "bar", "tilde", "mathbb", "mathcal"}
_NO_ARG_SPACE = re.compile(r"\s+")


def _bits(value: sympy.Basic) -> float:
    """Bits per unit of exponent of a power of `value`: the larger of numerator and denominator for a
    rational ((1+10^{-7})^{10^{12}} is huge exactly), at least 1 for anything else (sqrt(2)^n = 2^(n/2))."""
    if value.is_Rational:
        return float(max(int(value.p).bit_length(), int(value.q).bit_length()))
    try:
        return max(abs(float(sympy.log(abs(value), 2))), 1.0)
    except (TypeError, ValueError):
        return math.inf


class LatexParser:
    """Recursive descent over one LaTeX expression (no commas/relations at depth 0)."""

    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.abs_depth = 0  # inside |...|, a `|` closes instead of opening

    # -- scanning
    def _ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def peek(self) -> str:
        self._ws()
        return self.s[self.i] if self.i < len(self.s) else ""

    def _command_at(self) -> str | None:
        self._ws()
        m = re.match(r"\\([A-Za-z]+|.)", self.s[self.i :])
        return m.group(1) if m else None

    def take(self, token: str) -> bool:
        self._ws()
        if self.s.startswith(token, self.i):
            if token[0] == "\\" and token[-1].isalpha() and self.s[self.i + len(token) : self.i + len(token) + 1].isalpha():
                return False
            self.i += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.take(token):
            raise ParseError(f"expected {token!r} at {self.i} in {self.s!r}")

    # -- grammar
    def parse(self) -> sympy.Basic:
        value = self.expr()
        self._ws()
        if self.i != len(self.s):
            raise ParseError(f"unparsed tail {self.s[self.i:]!r}")
        return value

    def expr(self) -> sympy.Basic:
        value = self.term()
        while True:
            if self.take("+"):
                value = value + self.term()
            elif self.take("-"):
                value = value - self.term()
            else:
                return value

    def term(self) -> sympy.Basic:
        value = self.unary()
        while True:
            if self.take("*") or self.take("\\cdot") or self.take("\\times"):
                value = value * self.unary()
            elif self.take("/") or self.take("\\div"):
                denominator = self.unary()
                if denominator == 0:
                    raise ParseError("division by zero")
                value = value / denominator
            elif self._starts_atom():
                value = value * self.power()
            else:
                return value

    def unary(self) -> sympy.Basic:
        if self.take("-"):
            return -self.unary()
        if self.take("+"):
            return self.unary()
        return self.power()

    def _starts_atom(self) -> bool:
        c = self.peek()
        if not c:
            return False
        if c.isalnum() or c in "(.[{" or (c == "|" and self.abs_depth == 0):
            return True
        if c == "\\":
            name = self._command_at()
            return name not in {"cdot", "times", "div", "right", "rfloor", "rceil", "}", "pm", "mp", "cup", "le",
                                "ge", "leq", "geq", "ne", "neq", "lt", "gt", "in", "rvert", "rangle", "\\", "end"}
        return False

    def power(self) -> sympy.Basic:
        base = self.postfix(self.atom())
        if self.take("^"):
            exponent = self.unary_group()
            base = _pow(base, exponent)
        return base

    def unary_group(self) -> sympy.Basic:
        """An exponent: a braced group, or one character/command (`x^2`, `x^-1` tolerated)."""
        if self.peek() == "{":
            return self.group()
        if self.take("-"):
            return -self.single()
        return self.single()

    def single(self) -> sympy.Basic:
        """One digit, one letter or one command atom (`\\frac12`, `x^2`, `\\sqrt2`)."""
        c = self.peek()
        if c.isdigit():
            self.i += 1
            return sympy.Integer(int(c))
        if c.isalpha():
            self.i += 1
            return _letter(c)
        if c == "{":
            return self.group()
        if c == "\\":
            return self.atom()
        raise ParseError(f"expected an argument at {self.i} in {self.s!r}")

    def group(self) -> sympy.Basic:
        self.expect("{")
        value = self.expr()
        self.expect("}")
        return value

    def postfix(self, value: sympy.Basic) -> sympy.Basic:
        while True:
            if self.take("!"):
                value = _factorial(value)
            elif self.peek() == "'":
                raise ParseError("prime")
            else:
                return value

    def atom(self) -> sympy.Basic:
        c = self.peek()
        if not c:
            raise ParseError("unexpected end")
        if c.isdigit() or c == ".":
            return self.number()
        if c.isalpha():
            return self.word()
        if c == "(":
            self.i += 1
            value = self.expr()
            self.expect(")")
            return value
        if c == "[":
            self.i += 1
            value = self.expr()
            self.expect("]")
            return value
        if c == "{":
            return self.group()
        if c == "|":
            self.i += 1
            self.abs_depth += 1
            value = self.expr()
            self.abs_depth -= 1
            self.expect("|")
            return sympy.Abs(value)
        if c == "\\":
            return self.command()
        raise ParseError(f"unexpected {c!r} at {self.i} in {self.s!r}")

    def number(self) -> sympy.Basic:
        m = re.match(r"(\d+(?:\.\d*)?|\.\d+)(?:[eE]([-+]\d+))?", self.s[self.i :])
        if not m:
            raise ParseError("bad number")
        self.i += len(m.group(0))
        value = sympy.Rational(m.group(1))
        if self.s.startswith("\\overline", self.i) and "." in m.group(1):  # 0.\overline{3}: repeating digits
            self.i += len("\\overline")
            m2 = re.match(r"\s*\{?(\d+)\}?", self.s[self.i :])
            if not m2:
                raise ParseError("bad repeating decimal")
            self.i += len(m2.group(0))
            places = len(m.group(1).split(".")[1])
            repeat = m2.group(1)
            value += sympy.Rational(int(repeat), (10 ** len(repeat) - 1) * 10**places)
        if m.group(2):  # 1.5e-05 (an explicit exponent sign: `2e3` stays 2*e*3)
            value *= _pow(sympy.Integer(10), sympy.Integer(int(m.group(2))))
        if self.s.startswith("_", self.i):  # 52_8: a numeral in base 8, graded by its digits
            self.i += 1
            self.single()
        return value

    def word(self) -> sympy.Basic:
        run = re.match(r"[A-Za-z]+", self.s[self.i :]).group(0)
        if run in ("infty", "infinity", "inf"):
            self.i += len(run)
            return sympy.oo
        for name in _BARE_FUNCTIONS:
            if self.s.startswith(name, self.i):
                self.i += len(name)
                return self.function(name)
        if self.s.startswith("pi", self.i):
            self.i += 2
            return sympy.pi
        c = self.s[self.i]
        self.i += 1
        if self.peek() == "_":  # subscripted variable: x_1, a_{n}
            self.i += 1
            sub = self._subscript_text()
            return sympy.Symbol(f"{c}_{sub}")
        return _letter(c)

    def _subscript_text(self) -> str:
        self._ws()
        if self.s.startswith("{", self.i):
            end = self.s.find("}", self.i)
            if end < 0:
                raise ParseError("bad subscript")
            text = self.s[self.i + 1 : end]
            self.i = end + 1
            return _NO_ARG_SPACE.sub("", text)
        if self.i < len(self.s):
            self.i += 1
            return self.s[self.i - 1]
        raise ParseError("bad subscript")

    def _braced_text(self) -> str:
        self._ws()
        if not self.s.startswith("{", self.i):
            raise ParseError("expected {")
        depth, start = 0, self.i
        for j in range(self.i, len(self.s)):
            if self.s[j] == "{":
                depth += 1
            elif self.s[j] == "}":
                depth -= 1
                if depth == 0:
                    self.i = j + 1
                    return self.s[start + 1 : j]
        raise ParseError("unbalanced braces")

    def command(self) -> sympy.Basic:
        name = self._command_at()
        if name is None:
            raise ParseError("bad command")
        self.i += 1 + len(name)
        if name == "frac":
            numerator = self.single()
            denominator = self.single()
            if denominator == 0:
                raise ParseError("division by zero")
            return numerator / denominator
        if name == "sqrt":
            if self.take("["):
                index = self.expr()
                self.expect("]")
                return sympy.root(self.single(), index)
            return sympy.sqrt(self.single())
        if name == "binom":
            n, k = self.single(), self.single()
            if n.is_Integer and k.is_Integer and n > 0:
                m = min(int(k), int(n) - int(k))
                if m > 0 and m * math.log2(int(n)) > SIZE_LIMIT_BITS:
                    raise ParseError("binomial too large")
            elif n.is_number:
                raise ParseError("binomial of non-integers")
            return sympy.binomial(n, k)
        if name == "pi":
            return sympy.pi
        if name == "infty" or name == "infin":
            return sympy.oo
        if name in ("lfloor", "lceil"):
            value = self.expr()
            self.expect("\\rfloor" if name == "lfloor" else "\\rceil")
            return sympy.floor(value) if name == "lfloor" else sympy.ceiling(value)
        if name in ("lvert", "vert", "|"):
            value = self.expr()
            if not (self.take("\\rvert") or self.take("\\vert") or self.take("\\|")):
                raise ParseError("unclosed |")
            return sympy.Abs(value)
        if name in _FUNCTIONS or name in _MULTI_FUNCTIONS:
            return self.function(name)
        if name in _GREEK:
            return sympy.Symbol(name)
        if name in _WRAPPERS:
            text = _NO_ARG_SPACE.sub("", self._braced_text())
            if name in ("mathbb", "mathcal"):
                return sympy.Symbol(f"{name}_{text}")
            if text in _FUNCTIONS or text in _MULTI_FUNCTIONS:
                return self.function(text)
            if len(text) == 1 and text.isalpha():
                return _letter(text)
            if re.fullmatch(r"[A-Za-z]+", text):
                return sympy.Symbol(text)
            return LatexParser(text).parse()
        raise ParseError(f"unsupported command \\{name}")

    def function(self, name: str) -> sympy.Basic:
        if name == "sqrt":
            if self.peek() == "(":
                return sympy.sqrt(self.atom())
            return sympy.sqrt(self.single())
        base = None
        exponent = None
        for _ in range(2):
            if name == "log" and self.take("_"):
                base = self.single()
            elif self.take("^"):
                exponent = self.unary_group()
        if name in _MULTI_FUNCTIONS:
            self.expect("(")
            args = [self.expr()]
            while self.take(","):
                args.append(self.expr())
            self.expect(")")
            value = _MULTI_FUNCTIONS[name](*args) if len(args) > 1 else args[0]
        else:
            if self.peek() == "(":
                argument = self.atom()
            else:  # \sin x, \log 8, \sin 2x: the following implicit product
                argument = self.power()
                while self._starts_atom() and self.peek() not in "(\\":
                    argument = argument * self.power()
            if name == "log" and base is not None:
                value = sympy.log(argument, base)
            else:
                value = _FUNCTIONS[name](argument)
        if exponent is not None:
            if exponent == -1 and name in ("sin", "cos", "tan"):
                raise ParseError("ambiguous inverse function")
            value = _pow(value, exponent)
        return value


def _letter(c: str) -> sympy.Basic:
    if c == "e":
        return sympy.E
    if c == "i":
        return sympy.I
    return sympy.Symbol(c)


def _pow(base: sympy.Basic, exponent: sympy.Basic) -> sympy.Basic:
    """base^exponent, refusing values too large to compare exactly in bounded time (2^{2^{100}})."""
    if exponent.is_number and exponent.is_real and not exponent.has(sympy.oo, -sympy.oo, sympy.zoo):
        size = abs(float(exponent))
        if base.is_number:
            if base == 0 and exponent.is_negative:
                raise ParseError("division by zero")
            if base not in (0, 1, -1) and size * _bits(base) > SIZE_LIMIT_BITS:
                raise ParseError("power too large")
        elif size > MAX_SYMBOLIC_EXPONENT:
            raise ParseError("power too large")
    return sympy.Pow(base, exponent)


def _factorial(value: sympy.Basic) -> sympy.Basic:
    if value.is_Integer:
        if value < 0:
            raise ParseError("negative factorial")
        if value > MAX_FACTORIAL:
            raise ParseError("factorial too large")
    elif value.is_number:
        raise ParseError("factorial of a non-integer")
    return sympy.factorial(value)


def words_to_commas(s: str) -> str:
    """`1 \\text{ and } 2`, `1\\text{or}2` -> `1,2` (list words between items)."""
    return re.sub(r",?\s*\\text\{\s*(?:and|or)\s*\}\s*", ",", s)


__all__ = ["Expr", "Interval", "LatexParser", "Matrix", "ParseError", "Relation", "Seq", "Text", "Union",
           "parse_answer", "words_to_commas"]
