"""Group a problem's answers into equivalence clusters (for maj@k and weighted BoN)."""

from __future__ import annotations

from typing import Callable, Sequence

from thinkfast.evaluation.grading.normalize import normalize_answer

EquivMany = Callable[[list[tuple[str, str]]], list[bool]]


def cluster_many(answer_lists: Sequence[Sequence[str | None]], equivalent_many: EquivMany) -> list[list[int | None]]:
    """Per problem, a cluster id per answer (None for no answer). Identical normalised strings share a
    cluster; distinct ones are compared pairwise (one batched call for all problems) and each joins the
    earliest cluster whose head it is equivalent to (both directions checked)."""
    uniques: list[list[str]] = []  # per problem: distinct normalised answers, first-seen order
    for answers in answer_lists:
        seen = dict.fromkeys(normalize_answer(a) for a in answers if a is not None and a.strip())
        uniques.append(list(seen))
    pairs = [(u[i], u[j]) for u in uniques for j in range(len(u)) for i in range(j)]
    flat = equivalent_many(pairs + [(b, a) for a, b in pairs]) if pairs else []
    half = len(pairs)
    same = {pair: flat[n] and flat[half + n] for n, pair in enumerate(pairs)}

    result: list[list[int | None]] = []
    for answers, u in zip(answer_lists, uniques):
        heads: list[str] = []
        cluster_of: dict[str, int] = {}
        for s in u:
            for cid, head in enumerate(heads):
                if same[(head, s)]:
                    cluster_of[s] = cid
                    break
            else:
                cluster_of[s] = len(heads)
                heads.append(s)
        result.append([cluster_of[normalize_answer(a)] if a is not None and a.strip() else None for a in answers])
    return result
