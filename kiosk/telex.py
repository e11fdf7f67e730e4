"""Telex typing for the on-screen keyboard: plain keys become Vietnamese letters.

"dd" → đ, "aa" → â, "aw" → ă, "ee" → ê, "oo" → ô, "ow" → ơ, "uw" → ư ("uow" → ươ), and
the tone keys s (sắc), f (huyền), r (hỏi), x (ngã), j (nặng), z (remove) set the tone
of the word on the vowel where Vietnamese writes it. Works one word at a time.
"""

from __future__ import annotations

import unicodedata

TONES = {"s": "\u0301", "f": "\u0300", "r": "\u0309", "x": "\u0303", "j": "\u0323", "z": ""}
_TONE_MARKS = set(TONES.values()) - {""}
_VOWELS = set("aăâeêioôơuưy")
_HATS = {("a", "a"): "â", ("e", "e"): "ê", ("o", "o"): "ô", ("a", "w"): "ă", ("o", "w"): "ơ", ("u", "w"): "ư"}


def _split_tone(ch: str) -> tuple[str, str]:
    """'ế' → ('ê', acute)."""
    parts = unicodedata.normalize("NFD", ch)
    tone = next((c for c in parts if c in _TONE_MARKS), "")
    base = unicodedata.normalize("NFC", "".join(c for c in parts if c not in _TONE_MARKS))
    return base, tone


def _with_tone(base: str, tone: str) -> str:
    return unicodedata.normalize("NFC", base + tone)


def _strip(word: str) -> tuple[list[str], str]:
    bases, tone = [], ""
    for ch in word:
        b, t = _split_tone(ch)
        bases.append(b)
        tone = tone or t
    return bases, tone


def _tone_position(bases: list[str]) -> int | None:
    low = [b.lower() for b in bases]
    idx = [i for i, b in enumerate(low) if b in _VOWELS]
    # "qu" and "gi" followed by a vowel: the u / i belong to the consonant.
    if len(idx) > 1 and idx[0] == 1 and ((low[0] == "q" and low[1] == "u") or (low[0] == "g" and low[1] == "i")):
        idx = idx[1:]
    if not idx:
        return None
    for i in reversed(idx):
        if low[i] in "ăâêôơ":
            return i
    for i in reversed(idx):
        if low[i] == "ư":
            return i
    cluster_end = idx[-1]
    if cluster_end < len(low) - 1 or len(idx) == 1:
        return idx[-1]                       # followed by a consonant: the last vowel
    return idx[-3 + 1] if len(idx) >= 3 else idx[0]   # open syllable: "hóa", "của", "người"


def apply_key(word: str, key: str) -> str:
    """The word after typing ``key`` at its end."""
    k = key.lower()
    bases, tone = _strip(word)
    low = [b.lower() for b in bases]
    if k in TONES and any(b in _VOWELS for b in low):
        new_tone = TONES[k]
        if new_tone == tone and k != "z":
            return "".join(bases) + key      # the tone key twice: no tone, and the letter itself
        tone = new_tone
    elif k == "d" and low and low[0] == "d":
        bases[0] = "Đ" if bases[0] == "D" else "đ"
    elif k == "w" and low:
        if "u" in low and "o" in low and low.index("o") == low.index("u") + 1:
            i = low.index("u")
            bases[i], bases[i + 1] = _case("ư", bases[i]), _case("ơ", bases[i + 1])
        else:
            for i in range(len(low) - 1, -1, -1):
                if (low[i], "w") in _HATS:
                    bases[i] = _case(_HATS[(low[i], "w")], bases[i])
                    break
            else:
                bases.append(key)
    elif k in "aeo" and k in low:
        i = len(low) - 1 - low[::-1].index(k)
        bases[i] = _case(_HATS[(k, k)], bases[i])
    else:
        bases.append(key)
    pos = _tone_position(bases)
    if pos is None or not tone:
        return "".join(bases)
    return "".join(_with_tone(b, tone) if i == pos else b for i, b in enumerate(bases))


def _case(letter: str, like: str) -> str:
    return letter.upper() if like.isupper() else letter


def type_text(keys: str) -> str:
    """Type a whole sentence of Telex keys (for tests and the CLI)."""
    words = []
    for raw in keys.split(" "):
        w = ""
        for ch in raw:
            w = apply_key(w, ch)
        words.append(w)
    return " ".join(words)
