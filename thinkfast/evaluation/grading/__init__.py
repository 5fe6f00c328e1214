"""Answer extraction, equivalence cascade, time-out worker pool, verdict cache, answer clustering."""

from thinkfast.evaluation.grading.cluster import cluster_many
from thinkfast.evaluation.grading.equivalence import fast_verdict, is_equivalent
from thinkfast.evaluation.grading.extract import extract_answer, last_boxed
from thinkfast.evaluation.grading.grader import Grader
from thinkfast.evaluation.grading.normalize import normalize_answer
from thinkfast.evaluation.grading.pool import Outcome, TimeoutPool

__all__ = [
    "Grader", "Outcome", "TimeoutPool", "cluster_many", "extract_answer", "fast_verdict",
    "is_equivalent", "last_boxed", "normalize_answer",
]
