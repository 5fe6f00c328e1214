"""Deterministic multi-step arithmetic word problems with exact integer answers.

`steps` (number of operations) and `max_operand` (operand size) are the difficulty knobs; the same
(seed, n, steps, max_operand) always gives the same problems.
"""

from __future__ import annotations

import random

from thinkfast.evaluation.datasets import Problem, ProblemSet

_NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonah"]
_ITEMS = ["apples", "marbles", "stickers", "coins", "books", "pencils", "shells", "cards"]


def _step(rng: random.Random, value: int, max_operand: int, name: str, item: str) -> tuple[int, str]:
    """Apply one random operation to `value`; returns (new value, sentence). Values stay >= 0 and exact."""
    ops = ["add", "mul", "sub", "div", "groups"]
    while True:
        op = rng.choice(ops)
        a = rng.randint(2, max(2, max_operand))
        if op == "add":
            return value + a, f"Then {name} gets {a} more {item}."
        if op == "sub" and a <= value:
            return value - a, f"Then {name} gives away {a} {item}."
        if op == "mul":
            m = rng.randint(2, max(2, min(5, max_operand)))
            return value * m, f"Then the number of {item} {name} has becomes {m} times as large."
        if op == "div":
            divisors = [d for d in range(2, min(10, max_operand) + 1) if value % d == 0 and value // d > 0]
            if divisors:
                d = rng.choice(divisors)
                return value // d, f"Then {name} splits the {item} into {d} equal piles and keeps one pile."
        if op == "groups":
            g = rng.randint(2, max(2, min(6, max_operand)))
            return value + g * a, f"Then {name} buys {g} packs with {a} {item} in each pack."


def synthetic_problems(n: int = 50, steps: int = 3, max_operand: int = 20, seed: int = 0) -> ProblemSet:
    """`n` word problems of `steps` operations each, operands up to `max_operand`; gold is an integer string."""
    if n < 1 or steps < 1 or max_operand < 2:
        from thinkfast.errors import ThinkfastError

        raise ThinkfastError(f"synthetic problems need n >= 1, steps >= 1, max_operand >= 2 (got {n}, {steps}, {max_operand})")
    rng = random.Random(f"thinkfast-synthetic:{seed}:{steps}:{max_operand}")
    problems = []
    for i in range(n):
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        value = rng.randint(1, max_operand)
        sentences = [f"{name} has {value} {item}."]
        for _ in range(steps):
            value, sentence = _step(rng, value, max_operand, name, item)
            sentences.append(sentence)
        sentences.append(f"How many {item} does {name} have now?")
        problems.append(
            Problem(id=f"synthetic-s{seed}-d{steps}x{max_operand}-{i}", question=" ".join(sentences), gold=str(value), source="synthetic")
        )
    return ProblemSet(name="synthetic", problems=problems)
