"""Vietnamese text to speech: gTTS, cached, with espeak-ng as the offline fallback.

The cache key is sha256 of (engine, language, accent/tld, speed, text), so the same text
is never fetched twice. Long text is split at sentence boundaries; the parts are decoded
and joined with a short pause and 5 ms ramps at each edge, so joins never click. The
result is a 22.05 kHz mono WAV. When gTTS fails (no network, HTTP 429, timeout) the
text is spoken by espeak-ng (voice ``vi``) and the result is marked ``fallback``.
Used by the station when a bulletin is submitted, and by the kiosk for read-aloud.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

from devices.audio import decode_file, fade, silence
from devices.errors import AudioError, ThanthienError, ValidationError

log = logging.getLogger(__name__)

RATE = 22050
MAX_TEXT_CHARS = 20_000
PART_CHARS = 180  # gTTS splits at 100; we keep whole sentences up to this length
PAUSE_MS = 250


class TtsError(ThanthienError, RuntimeError):
    """Neither gTTS nor the fallback could speak the text."""


@dataclass(frozen=True)
class Speech:
    path: Path
    engine: str          # the engine that produced it: "gtts" or "espeak-ng"
    fallback: bool       # True when gTTS failed and espeak-ng spoke instead
    cache_key: str
    duration_ms: int


def split_sentences(text: str, limit: int = PART_CHARS) -> list[str]:
    """Sentences (., !, ?, …, ;, newlines), long ones cut at commas or spaces."""
    text = re.sub(r"[ \t]+", " ", text.strip())
    raw = [s.strip() for s in re.split(r"(?<=[.!?…;])\s+|\n+", text) if s.strip()]
    out: list[str] = []
    for s in raw:
        while len(s) > limit:
            cut = max(s.rfind(", ", 0, limit), s.rfind(" ", 0, limit))
            cut = cut if cut > limit // 3 else limit
            out.append(s[:cut].strip(" ,"))
            s = s[cut:].strip(" ,")
        if s:
            out.append(s)
    return out


class TextToSpeech:
    def __init__(self, cache_dir: Path, *, engine: str = "gtts", language: str = "vi", tld: str = "com.vn",
                 slow: bool = False, timeout_s: float = 15.0, fallback: str = "espeak-ng", espeak_voice: str = "vi"):
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.engine, self.language, self.tld, self.slow = engine, language, tld, slow
        self.timeout_s, self.fallback, self.espeak_voice = timeout_s, fallback, espeak_voice

    @classmethod
    def from_settings(cls, cache_dir: Path, settings) -> "TextToSpeech":
        return cls(cache_dir, engine=settings.engine, language=settings.language, tld=settings.tld,
                   slow=settings.slow, timeout_s=settings.timeout_s, fallback=settings.fallback,
                   espeak_voice=settings.espeak_voice)

    def cache_key(self, text: str, engine: str | None = None) -> str:
        ident = [engine or self.engine, self.language, self.tld if (engine or self.engine) == "gtts" else
                 self.espeak_voice, "slow" if self.slow else "normal", text]
        return hashlib.sha256(json.dumps(ident, ensure_ascii=False).encode("utf-8")).hexdigest()

    def speak(self, text: str) -> Speech:
        """Speech for ``text``, from the cache when it was made before."""
        text = (text or "").strip()
        if not text:
            raise ValidationError(["nội dung: chưa có nội dung để đọc"])
        if len(text) > MAX_TEXT_CHARS:
            raise ValidationError([f"nội dung: dài {len(text)} ký tự, tối đa {MAX_TEXT_CHARS}"])
        primary = self.cache_key(text)
        cached = self._cached(primary)
        if cached:
            return cached
        if self.engine == "gtts":
            try:
                return self._render(text, primary, "gtts", fallback=False)
            except TtsError as exc:
                if self.fallback == "none":
                    raise
                log.warning("gTTS failed (%s); speaking with espeak-ng instead", exc)
        key = self.cache_key(text, "espeak-ng")
        # a fallback is cached under its own key: the next submission tries gTTS again
        return self._cached(key, fallback=self.engine == "gtts") or self._render(
            text, key, "espeak-ng", fallback=self.engine == "gtts")

    def _cached(self, key: str, fallback: bool | None = None) -> Speech | None:
        wav, meta = self.cache_dir / f"{key}.wav", self.cache_dir / f"{key}.json"
        if wav.exists() and meta.exists():
            try:
                m = json.loads(meta.read_text("utf-8"))
                return Speech(wav, m["engine"], m["fallback"] if fallback is None else fallback, key, m["duration_ms"])
            except (ValueError, KeyError):
                return None
        return None

    def _render(self, text: str, key: str, engine: str, fallback: bool) -> Speech:
        parts = split_sentences(text)
        pcm = bytearray()
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmpd:
            for i, part in enumerate(parts):
                path = Path(tmpd) / f"{i}.audio"
                if engine == "gtts":
                    self._gtts(part, path)
                else:
                    self._espeak(part, path)
                try:
                    piece = decode_file(path, RATE, 1)
                except AudioError as exc:
                    raise TtsError(f"{engine} returned audio that does not decode: {exc}") from None
                # 5 ms ramps at both edges: joins never click
                ramp = RATE * 5 // 1000 * 2
                if len(piece) > 4 * ramp:
                    piece = fade(piece[:ramp], 0.0, 1.0, 1) + piece[ramp:-ramp] + fade(piece[-ramp:], 1.0, 0.0, 1)
                if pcm:
                    pcm += silence(PAUSE_MS, RATE, 1)
                pcm += piece
        out = self.cache_dir / f"{key}.wav"
        tmp = out.with_suffix(".tmp")
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(bytes(pcm))
        os.replace(tmp, out)
        duration = len(pcm) // 2 * 1000 // RATE
        (self.cache_dir / f"{key}.json").write_text(json.dumps(
            {"engine": engine, "fallback": fallback, "duration_ms": duration, "parts": len(parts)}), "utf-8")
        return Speech(out, engine, fallback, key, duration)

    def _gtts(self, text: str, path: Path) -> None:
        from gtts import gTTS, gTTSError
        import requests

        try:
            tts = gTTS(text, lang=self.language, tld=self.tld, slow=self.slow, lang_check=False, timeout=self.timeout_s)
            with open(path, "wb") as f:
                tts.write_to_fp(f)
        except (gTTSError, requests.RequestException, OSError, AssertionError) as exc:
            raise TtsError(f"gTTS: {exc}") from None
        if path.stat().st_size == 0:
            raise TtsError("gTTS returned no audio")

    def _espeak(self, text: str, path: Path) -> None:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise TtsError("espeak-ng is not installed (run `make system-packages`)")
        try:
            subprocess.run([exe, "-v", self.espeak_voice, "-s", "150" if not self.slow else "120", "-w", str(path),
                            "--", text], check=True, capture_output=True, timeout=120)
        except (subprocess.SubprocessError, OSError) as exc:
            raise TtsError(f"espeak-ng failed: {exc}") from None
