"""Read a procedure aloud: a short spoken summary, synthesised once and cached.

The summary is what a citizen at the counter needs to hear (name, where, how long, how
much, which papers), not the whole legal text. gTTS when the network allows, espeak-ng
otherwise (broadcast.tts), played through the kiosk's audio sink on a thread so the
screen stays responsive; leaving the page stops it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from broadcast.tts import TextToSpeech
from devices.audio import decode_file, open_sink

from .catalogue import Procedure
from .config import KioskConfig

log = logging.getLogger("thanthien.kiosk.speech")
CHUNK_MS = 100


def spoken_summary(p: Procedure, max_documents: int = 6) -> str:
    parts = [p.name.rstrip(".") + "."]
    if p.field:
        parts.append(f"Lĩnh vực: {p.field}.")
    if p.agency:
        parts.append(f"Cơ quan thực hiện: {p.agency}.")
    if p.time_summary:
        parts.append(f"Thời hạn giải quyết: {p.time_summary.rstrip('.')}.")
    if p.fee_summary:
        parts.append(f"Phí, lệ phí: {p.fee_summary.rstrip('.')}.")
    docs = [d for g in p.documents for d in g.documents]
    if docs:
        parts.append("Hồ sơ gồm: " + "; ".join(d.name for d in docs[:max_documents]) + ".")
        if len(docs) > max_documents:
            parts.append(f"Và {len(docs) - max_documents} giấy tờ khác, xem trên màn hình.")
    if p.results:
        parts.append(f"Kết quả: {p.results[0].rstrip('.')}.")
    return " ".join(parts)


class Reader:
    """Speaks one text at a time; ``stop()`` cuts it short."""

    def __init__(self, config: KioskConfig):
        self.config = config
        self.tts = TextToSpeech.from_settings(Path(config.data_dir) / "tts", config.tts)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.last_engine: str | None = None

    @property
    def speaking(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def read(self, text: str, on_done=None) -> None:
        self.stop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(text, self._stop, on_done), name="kiosk-speech",
                                        daemon=True)
        self._thread.start()

    def _run(self, text: str, stop: threading.Event, on_done) -> None:
        audio = self.config.audio
        try:
            speech = self.tts.speak(text)
            self.last_engine = speech.engine
            pcm = decode_file(speech.path, audio.sample_rate, audio.channels)
            sink = open_sink(audio.sink, device=audio.device, sample_rate=audio.sample_rate,
                             channels=audio.channels, buffer_ms=audio.buffer_ms)
            try:
                step = audio.sample_rate * audio.channels * 2 * CHUNK_MS // 1000
                for i in range(0, len(pcm), step):
                    if stop.is_set():
                        break
                    sink.write(pcm[i:i + step])
            finally:
                sink.close()
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 - reading aloud is a convenience, never a crash
            log.warning("read aloud failed: %s", exc)
            self.last_error = str(exc)
        finally:
            if on_done:
                on_done(self.last_error)

    def stop(self) -> None:
        self._stop.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
