"""`tune_decode.interleaved`: settings are timed round-robin, so a slow stretch hits every setting."""

from thinkfast.benchmarks.tune_decode import interleaved


def test_settings_are_timed_round_robin():
    calls = []

    def timer(fn):
        calls.append(fn())
        return float(len(calls))

    times = interleaved([lambda: "a", lambda: "b", lambda: "c"], timer, rounds=2)
    assert calls == ["a", "b", "c", "a", "b", "c"]
    assert times == [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]
