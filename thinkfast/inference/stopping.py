"""Host-side stop rules for one sequence: EOS, stop strings, token budget.

The engine hands over a sequence's tokens a window at a time (every few decode steps), so
the device never waits on these checks.  Stop strings are looked for in the decoded tail
of the sequence only (enough tokens back to hold the longest stop string), so a check costs
the same at token 10 and token 10,000.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Verdict:
    keep: int  # tokens of the sequence to keep
    reason: str | None  # "eos" | "stop" | "length" | None (still running)
    stop_string: str | None = None


class StopRules:
    def __init__(self, eos_ids: set[int], stop: list[str], ignore_eos: bool, budget: int, tokenizer=None):
        self.eos_ids = set() if ignore_eos else set(eos_ids)
        self.stop = [s for s in stop if s]
        if self.stop and tokenizer is None:
            raise ValueError("stop strings need a tokenizer to decode the generated text")
        self.budget = budget
        self.tokenizer = tokenizer
        # a stop string of c characters spans at most c tokens (+ slack for multi-token characters)
        self.lookback = max((len(s) for s in self.stop), default=0) + 4

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _first_stop(self, tokens: list[int], new_from: int, until: int) -> tuple[int, str] | None:
        """Smallest t in (new_from, until] whose prefix tokens[:t] ends a stop string."""
        start = max(0, new_from - self.lookback)
        tail = self._decode(tokens[start:until])
        if not any(s in tail for s in self.stop):
            return None
        for t in range(new_from + 1, until + 1):
            text = self._decode(tokens[start:t])
            for s in self.stop:
                if s in text:
                    return t, s
        return None

    def check(self, tokens: list[int], new_from: int) -> Verdict:
        """`tokens`: all generated tokens so far; those from `new_from` on are new since the last check."""
        end = len(tokens)
        eos_at = next((i for i in range(new_from, end) if tokens[i] in self.eos_ids), None)
        until = end if eos_at is None else eos_at + 1
        if self.stop:
            hit = self._first_stop(tokens, new_from, until)
            if hit is not None:
                return Verdict(hit[0], "stop", hit[1])
        if eos_at is not None:
            return Verdict(eos_at + 1, "eos")
        if end >= self.budget:
            return Verdict(self.budget, "length")
        return Verdict(end, None)

    def final_text(self, tokens: list[int], verdict: Verdict) -> str:
        if self.tokenizer is None:
            return ""
        text = self._decode(tokens[: verdict.keep])
        if verdict.reason == "stop":
            cuts = [text.find(s) for s in self.stop if s in text]
            if cuts:
                text = text[: min(cuts)]
        return text
