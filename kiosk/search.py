"""Search that forgives: no diacritics needed, any case, one typo per word.

Citizens type on a touchscreen, often without Vietnamese input; "dang ky ket hon" must
find "Đăng ký kết hôn". Everything is folded to plain lower-case ASCII letters (đ → d)
and indexed in memory; a query word matches a word that equals it, starts with it, or is
one edit away (SymSpell-style delete neighbourhoods, so a typo costs a dict lookup).
Matches in the name rank far above matches in the body.
"""

from __future__ import annotations

import bisect
import heapq
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass

import sqlite_utils

_WORD = re.compile(r"[a-z0-9]+")
NAME_EXACT, NAME_PREFIX, BODY_EXACT, BODY_PREFIX = 10.0, 6.0, 1.0, 0.6
TYPO_FACTOR = 0.5
MAX_QUERY = 200


def normalize(text: str) -> str:
    """'Đăng ký Kết hôn' → 'dang ky ket hon'."""
    text = text.replace("đ", "d").replace("Đ", "D")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(_WORD.findall(text.lower()))


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def one_edit_apart(a: str, b: str) -> bool:
    """True when b is a with one letter inserted, deleted, replaced, or two neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                   and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = next((k for k in range(len(short)) if short[k] != long_[k]), len(short))
    return short[i:] == long_[i + 1:]


@dataclass(frozen=True)
class Hit:
    code: str
    name: str
    field: str
    score: float

    def to_dict(self) -> dict:
        return {"code": self.code, "name": self.name, "field": self.field, "score": round(self.score, 2)}


class SearchIndex:
    """An inverted index over name and body words, rebuilt after every import."""

    def __init__(self, rows: list[tuple[str, str, str, str, str]]):
        # rows: (code, name, field, name_key, body_key)
        self.meta: dict[str, tuple[str, str]] = {}
        self.name_keys: dict[str, str] = {}
        self.name_lengths: dict[str, int] = {}
        self.name_words: dict[str, set[str]] = defaultdict(set)
        self.body_words: dict[str, set[str]] = defaultdict(set)
        for code, name, field, name_key, body_key in rows:
            self.meta[code] = (name, field)
            self.name_keys[code] = name_key
            self.name_lengths[code] = max(1, len(name_key.split()))
            for w in name_key.split():
                self.name_words[w].add(code)
            for w in set(body_key.split()):
                self.body_words[w].add(code)
        self.vocabulary = sorted(set(self.name_words) | set(self.body_words))
        self._typo: dict[str, set[str]] = defaultdict(set)
        for w in self.vocabulary:
            if len(w) >= 3:
                for d in _deletes(w):
                    self._typo[d].add(w)
        self._prefix_cache: dict[str, list[str]] = {}

    @classmethod
    def from_db(cls, db: sqlite_utils.Database) -> "SearchIndex":
        return cls(db.execute("SELECT code, name, field, name_key, body_key FROM procedures").fetchall())

    def _prefixed(self, word: str) -> list[str]:
        if word not in self._prefix_cache:
            i = bisect.bisect_left(self.vocabulary, word)
            out = []
            while i < len(self.vocabulary) and self.vocabulary[i].startswith(word):
                out.append(self.vocabulary[i])
                i += 1
            self._prefix_cache[word] = out
        return self._prefix_cache[word]

    def _typos(self, word: str) -> set[str]:
        if len(word) < 3:
            return set()
        out = set(self._typo.get(word, ()))           # a letter missing from the query
        for d in _deletes(word):
            if d in self.name_words or d in self.body_words:
                out.add(d)                             # an extra letter in the query
            out |= self._typo.get(d, set())            # a wrong or swapped letter
        return {w for w in out if one_edit_apart(word, w)}

    def _word_scores(self, word: str) -> dict[str, float]:
        scores: dict[str, float] = defaultdict(float)

        def add(candidates: set[str] | list[str], name_w: float, body_w: float, factor: float = 1.0) -> None:
            for cand in candidates:
                for code in self.name_words.get(cand, ()):
                    scores[code] = max(scores[code], name_w * factor)
                for code in self.body_words.get(cand, ()):
                    scores[code] = max(scores[code], body_w * factor)

        add([word], NAME_EXACT, BODY_EXACT)
        if len(word) >= 2:
            add([w for w in self._prefixed(word) if w != word], NAME_PREFIX, BODY_PREFIX)
        if not scores or len(scores) < 3:
            add(self._typos(word), NAME_EXACT, BODY_EXACT, TYPO_FACTOR)
        return scores

    def search(self, query: str, *, field: str | None = None, limit: int = 50) -> list[Hit]:
        words = normalize(query[:MAX_QUERY]).split()[:12]
        if not words:
            return []
        per_word = [self._word_scores(w) for w in words]
        totals: dict[str, float] = defaultdict(float)
        matched: dict[str, int] = defaultdict(int)
        for scores in per_word:
            for code, s in scores.items():
                totals[code] += s
                matched[code] += 1
        if field is not None:
            totals = {c: s for c, s in totals.items() if self.meta[c][1] == field}
        # When some procedures match every word, the others are noise: show only those.
        if totals and max(matched[c] for c in totals) == len(per_word):
            totals = {c: s for c, s in totals.items() if matched[c] == len(per_word)}
        # Procedures matching every word first, then by score. Bonuses (the query as a
        # phrase in the name; fewer other words in the name) only reorder near the top,
        # so only a pool of the best candidates is refined.
        pool = heapq.nlargest(max(200, limit * 4), totals, key=lambda c: (matched[c], totals[c]))
        phrase = " ".join(words)
        final = {}
        for code in pool:
            name_key = self.name_keys[code]
            bonus = 5 if phrase in name_key else 0
            final[code] = totals[code] + bonus + 4 * min(1.0, len(words) / self.name_lengths[code])
        ranked = sorted(pool, key=lambda c: (-matched[c], -final[c], self.meta[c][0]))
        return [Hit(c, self.meta[c][0], self.meta[c][1], final[c]) for c in ranked[:limit]]
