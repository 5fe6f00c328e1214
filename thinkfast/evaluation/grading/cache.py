"""On-disk verdict cache keyed by (grader version, gold, answer): a SQLite file, safe to reuse across runs."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

from thinkfast.evaluation.grading.equivalence import GRADER_VERSION


def _key(gold: str, answer: str) -> str:
    return hashlib.sha1(json.dumps([GRADER_VERSION, gold, answer]).encode()).hexdigest()


class VerdictCache:
    def __init__(self, path: str | os.PathLike | None = None):
        self.memory: dict[str, bool] = {}
        self.db = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path))
            self.db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict INTEGER)")

    def get(self, gold: str, answer: str) -> bool | None:
        key = _key(gold, answer)
        if key in self.memory:
            return self.memory[key]
        if self.db is not None:
            row = self.db.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone()
            if row is not None:
                self.memory[key] = bool(row[0])
                return bool(row[0])
        return None

    def put_many(self, items: list[tuple[str, str, bool]]) -> None:
        rows = [(_key(g, a), int(v)) for g, a, v in items]
        self.memory.update({k: bool(v) for k, v in rows})
        if self.db is not None and rows:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", rows)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
