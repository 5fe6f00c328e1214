"""Grader suite: extraction, must-match and must-not-match equivalences (incl. known false positives, docs/design.md §6),
the time-out pool, the verdict cache and answer clustering."""

import time

import pytest

from thinkfast.evaluation.grading import Grader, TimeoutPool, cluster_many, extract_answer, is_equivalent

# (gold, model answer) pairs that must grade as equivalent
MATCH = [
    ("1000", "1,000"),  # thousands separator
    ("1234567", "1,234,567"),
    ("27.0", "27"),  # AMC float gold
    ("27", "27.00"),
    ("\\frac{1}{2}", "0.5"),  # fraction vs decimal
    ("\\dfrac{3}{4}", "0.75"),
    ("-\\frac{7}{2}", "-3.5"),
    ("3/4", "\\frac34"),
    ("10", "10\\text{ cm}"),  # units in \text{}
    ("5", "5\\text{ meters}"),
    ("\\text{Evelyn}", "Evelyn"),  # text answer
    ("30^\\circ", "30"),  # degrees
    ("90", "90^{\\circ}"),
    ("50\\%", "50"),  # percent: the same number with a percent sign
    ("[0,9)", "[0, 9)"),  # intervals, same brackets
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),  # tuples
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),  # matrices
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}"),
    ("5", "x=5"),  # equations
    ("x=5", "5"),
    ("\\pm 2", "2, -2"),  # plus-minus
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}"),  # sets
    ("3\\sqrt{2}", "\\sqrt{18}"),  # symbolic
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"),
    ("x^2+2x+1", "(x+1)^2"),
]

# pairs that must NOT grade as equivalent
NO_MATCH = [
    ("0.5", "50"),  # percent leniency
    ("50", "0.5"),
    ("(0,9)", "[0,9)"),  # open vs half-open interval
    ("(0,9)", "(0,9]"),
    ("(-\\infty, 3]", "(-\\infty, 3)"),
    ("x>5", "x<5"),  # inequality direction
    ("\\frac{\\sqrt3}{2}", "0.866"),  # loose float tolerance
    ("0.866", "\\frac{\\sqrt{3}}{2}"),
    ("\\frac{1}{3}", "0.333"),
    ("5", "5x"),  # a single letter is not a unit
    ("2", "2a"),
    ("3", "3n"),
    ("\\text{Evelyn}", "\\text{Evelny}"),  # words are not products of letters
    ("Evelyn", "Evelny"),
    ("1000", "100"),
    ("1,2", "12"),  # a tuple/list is not a thousands number
    ("(1,2)", "(2,1)"),  # tuple order matters
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&2\\\\4&3\\end{pmatrix}"),
    ("x=5", "y=5"),
    ("\\pm 2", "2"),
    ("\\{1, 2\\}", "\\{1, 2, 3\\}"),
    ("30^\\circ", "60"),
    ("27", "27.5"),
]


@pytest.mark.parametrize("gold,answer", MATCH)
def test_must_match(gold, answer):
    assert is_equivalent(gold, answer), (gold, answer)


@pytest.mark.parametrize("gold,answer", NO_MATCH)
def test_must_not_match(gold, answer):
    assert not is_equivalent(gold, answer), (gold, answer)


def test_no_answer_is_wrong():
    assert not is_equivalent("5", None)
    assert not is_equivalent("5", "  ")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("First \\boxed{2}. So the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),  # last box
        ("\\boxed{\\{1,\\{2\\}\\}} done", "\\{1,\\{2\\}\\}"),  # nested / escaped braces
        ("so \\fbox{7}", "7"),
        ("Therefore, the final answer is: $\\boxed{42}$. I hope it is correct.", "42"),
        ("Reasoning...\nThe final answer is 1,234.", "1,234"),
        ("The final answer is $18. Extra words", "18. Extra words"),
        ("Work\n#### 72", "72"),
        ("3 apples then 4.5 pears, total -7/2", "-7/2"),
        ("no digits here", None),
        ("\\boxed{unclosed 3", "3"),
    ],
)
def test_extraction(text, expected):
    assert extract_answer(text) == expected


def test_pool_kills_hung_worker_and_keeps_order():
    start = time.monotonic()
    with TimeoutPool(workers=2, timeout=1.0) as pool:
        outcomes = pool.map(time.sleep, [0.01, 30, 0.02])
        assert [o.ok for o in outcomes] == [True, False, True]
        assert outcomes[1].timed_out and pool.restarts == 1
        # the replaced worker keeps serving
        assert [o.value for o in pool.map(abs, [-1, -2, 3])] == [1, 2, 3]
        bad = pool.map(int, ["x"])[0]
        assert bad.error and "ValueError" in bad.error
    assert time.monotonic() - start < 10


def test_grader_pool_and_disk_cache(tmp_path):
    # (0,9) vs [0,9) is now decided in process (rational endpoints); (0,pi) vs [0,pi) needs the pool
    pairs = [("x=5", "5"), ("(0,\\pi)", "[0,\\pi)"), ("27.0", "27"), ("5", None)]
    with Grader(workers=2, timeout=20, cache_path=tmp_path / "v.sqlite") as grader:
        assert grader.equivalent_many(pairs) == [True, False, True, False]
    # a second grader reads the symbolic verdicts from disk without any worker
    with Grader(workers=1, timeout=20, cache_path=tmp_path / "v.sqlite") as grader:
        assert grader.cache.get("x=5", "5") is True
        assert grader.cache.get("(0,\\pi)", "[0,\\pi)") is False
        assert grader.equivalent_many(pairs[:2]) == [True, False]
        assert grader.pool.workers == []  # nothing had to be computed


def test_clusters_by_equivalence_not_string():
    def equiv(pairs):
        return [is_equivalent(a, b) for a, b in pairs]

    clusters = cluster_many([["0.5", "\\frac{1}{2}", "50", None, "1/2", "50.0"]], equiv)[0]
    assert clusters[0] == clusters[1] == clusters[4]
    assert clusters[2] == clusters[5] != clusters[0]
    assert clusters[3] is None


def test_bench_grading_command(tmp_path, capsys):
    import json

    from thinkfast.cli import main

    rows = [{"problem": "p", "answer": a} for a in ["\\frac{1}{2}", "(1,2)", "x=5", "\\text{Evelyn}"]]
    (tmp_path / "math500_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gsm = [{"question": "q", "answer": f"work\n#### {n}"} for n in (18, 1800)]
    (tmp_path / "gsm8k_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gsm))
    assert main(["bench", "grading", "--data", str(tmp_path), "--workers", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    # 4 golds x (re-typeset + 6 others, deduplicated) + 2 GSM8K golds x 3
    assert out["pairs"] == 4 * 4 + 6 and out["timeouts"] == 0 and out["pairs_per_s"] > 0
    assert out["equal"] == 4 + 2 * 2  # each gold re-typeset, GSM8K gold and "N dollars"
