"""The adversarial gold/prediction set (adversarial_pairs.py): every pair graded right, in both argument
orders, in process and through the `Grader` (worker pool + cache); counts printed per category."""

from collections import Counter

import pytest

from tests.evaluation.adversarial_pairs import PAIRS, RESPONSE
from thinkfast.evaluation.grading import Grader, extract_answer, is_equivalent


def _answer(category: str, prediction: str) -> str | None:
    return extract_answer(prediction) if category == RESPONSE else prediction


def test_set_size_and_balance():
    assert len(PAIRS) >= 200
    assert len({(g, p) for _, g, p, _ in PAIRS}) == len(PAIRS), "duplicate pairs"
    labels = Counter(expected for *_, expected in PAIRS)
    assert labels[True] >= 80 and labels[False] >= 80


@pytest.mark.parametrize("category,gold,prediction,expected", PAIRS, ids=[f"{c}-{i}" for i, (c, *_) in enumerate(PAIRS)])
def test_pair(category, gold, prediction, expected):
    answer = _answer(category, prediction)
    assert is_equivalent(gold, answer) is expected, (gold, answer)
    if category != RESPONSE:  # the grader is symmetric: clustering compares answers with each other
        assert is_equivalent(answer, gold) is expected, (answer, gold)


def test_whole_set_through_grader_has_no_false_verdicts(capsys):
    pairs = [(gold, _answer(c, p)) for c, gold, p, _ in PAIRS]
    with Grader(workers=2, timeout=30) as grader:
        verdicts = grader.equivalent_many(pairs)
        assert grader.timeouts == 0 and grader.errors == 0
    false_pos, false_neg, per_category = Counter(), Counter(), Counter()
    for (category, gold, prediction, expected), verdict in zip(PAIRS, verdicts):
        per_category[category] += 1
        if verdict and not expected:
            false_pos[category] += 1
        elif expected and not verdict:
            false_neg[category] += 1
    with capsys.disabled():
        print(f"\nadversarial pairs: {len(PAIRS)} ({sum(e for *_, e in PAIRS)} equal), "
              f"false positives {sum(false_pos.values())}, false negatives {sum(false_neg.values())}")
        for category, n in sorted(per_category.items()):
            print(f"  {category:18s} {n:4d} pairs  FP {false_pos[category]}  FN {false_neg[category]}")
    assert not false_pos and not false_neg, (dict(false_pos), dict(false_neg))
