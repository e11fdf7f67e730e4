"""The node's player: one audio output, many wishes, strict priorities.

Items wait in a priority queue (emergency 3 > priority 2 > normal 1 > relay 0; equal
priorities in arrival order). A higher item pre-empts the playing one within one chunk
(50 ms) plus a short fade; the interrupted item is resumed, restarted or dropped as its
policy says, and every outcome is reported through ``on_event``. The amplifier relay is
acquired for each item and released after, so it stays on between back-to-back items.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..audio import SAMPLE_WIDTH, Sink, apply_gain, fade, stream_url, volume_gain
from ..errors import AudioError
from ..protocol import EventType, InterruptPolicy, Priority

log = logging.getLogger(__name__)

CHUNK_MS = 50


class ItemKind(enum.StrEnum):
    MEDIA = "media"
    RELAY = "relay"
    TONE = "tone"


class Outcome(enum.StrEnum):
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(eq=False)
class PlayItem:
    """One thing to play. ``pcm`` for media and tones; ``url``/``until_ms`` for relays."""

    key: str
    kind: ItemKind
    priority: Priority
    pcm: bytes = b""
    url: str | None = None
    until_ms: int | None = None
    volume: int | None = None           # None: the node's volume at play time
    repeat: int = 1
    broadcast_id: str | None = None
    occurrence_id: str | None = None
    scheduled_at: int | None = None
    title: str | None = None
    interrupt_policy: InterruptPolicy = InterruptPolicy.RESUME
    on_done: Callable[["PlayItem", Outcome, str | None], None] | None = None
    # progress
    position: int = 0
    rep_done: int = 0
    started_at: int | None = None
    played_bytes: int = 0
    first_frame_ns: int | None = None
    seq: int = field(default=0)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Player:
    """Owns the sink and the amplifier; call ``submit``, ``stop``, ``close``."""

    def __init__(self, sink: Sink, amp, *, volume: Callable[[], int], emergency_volume: Callable[[], int],
                 max_volume: Callable[[], int] = lambda: 100, fade_ms: int = 150,
                 on_event: Callable[..., None] = lambda *a, **k: None, device_retries: int = 3):
        self.sink = sink
        self.amp = amp
        self._volume = volume
        self._emergency_volume = emergency_volume
        self._max_volume = max_volume
        self.fade_ms = fade_ms
        self.on_event = on_event
        self.device_retries = device_retries
        self.frame_bytes = sink.channels * SAMPLE_WIDTH
        self.chunk_bytes = sink.sample_rate * CHUNK_MS // 1000 * self.frame_bytes
        self._queue: list[PlayItem] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._current: PlayItem | None = None
        self._stop_current: str | None = None   # reason to stop the current item
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="player", daemon=True)
        self._thread.start()

    # --- control --------------------------------------------------------------------

    @property
    def now_playing(self) -> PlayItem | None:
        return self._current

    def submit(self, item: PlayItem) -> None:
        with self._cond:
            item.seq = next(self._seq)
            self._queue.append(item)
            self._idle.clear()
            self._cond.notify_all()

    def stop(self, broadcast_id: str | None = None) -> int:
        """Stop what matches (everything when None): queued items are dropped too."""
        stopped = []
        with self._cond:
            keep = []
            for it in self._queue:
                (stopped if broadcast_id is None or it.broadcast_id == broadcast_id else keep).append(it)
            self._queue = keep
            cur = self._current
            if cur is not None and (broadcast_id is None or cur.broadcast_id == broadcast_id):
                self._stop_current = "stopped"
                stopped.append(cur)
            self._cond.notify_all()
        for it in stopped:
            if it is not cur:
                self._finish(it, Outcome.STOPPED, "stopped")
        return len(stopped)

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Stop audio, switch the amplifier off, end the thread."""
        with self._cond:
            self._closed = True
            self._stop_current = "shutdown"
            self._cond.notify_all()
        self._thread.join(timeout)
        self.amp.off_now()
        try:
            self.sink.close()
        except AudioError:
            pass

    # --- the loop ---------------------------------------------------------------------

    def _pick(self) -> PlayItem | None:
        if not self._queue:
            return None
        best = max(self._queue, key=lambda it: (int(it.priority), -it.seq))
        self._queue.remove(best)
        return best

    def _higher_waiting(self, priority: Priority) -> bool:
        return any(it.priority > priority for it in self._queue)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._idle.set()
                    self.sink.pause()
                    self._cond.wait()
                if self._closed:
                    return
                item = self._pick()
                self._current = item
                self._stop_current = None
            try:
                self._play(item)
            except Exception:  # the player must outlive any bug in one item
                log.exception("player failed on %s", item.key)
                self._finish(item, Outcome.FAILED, "internal error")
            finally:
                with self._cond:
                    self._current = None

    def _gain(self, item: PlayItem) -> float:
        if item.priority is Priority.EMERGENCY:
            vol = self._emergency_volume()
        else:
            vol = self._volume() if item.volume is None else item.volume
            vol = min(vol, self._max_volume())
        return volume_gain(vol)

    def _effective_volume(self, item: PlayItem) -> int:
        if item.priority is Priority.EMERGENCY:
            return self._emergency_volume()
        return min(self._volume() if item.volume is None else item.volume, self._max_volume())

    def _chunks(self, item: PlayItem, stop: threading.Event) -> Iterator[bytes]:
        if item.kind is ItemKind.RELAY:
            for pcm in stream_url(item.url or "", self.sink.sample_rate, self.sink.channels, stop):
                if item.until_ms is not None and _now_ms() >= item.until_ms:
                    return
                yield pcm
            return
        while item.rep_done < item.repeat:
            while item.position < len(item.pcm):
                chunk = item.pcm[item.position:item.position + self.chunk_bytes]
                yield chunk
                item.position += len(chunk)
            item.rep_done += 1
            item.position = 0

    def _play(self, item: PlayItem) -> None:
        if item.kind is ItemKind.RELAY and item.until_ms is not None and _now_ms() >= item.until_ms:
            self._finish(item, Outcome.FINISHED, None)
            return
        self.amp.acquire()
        try:
            outcome, reason = self._write_all(item)
        finally:
            self.amp.release()
        if outcome is Outcome.INTERRUPTED:
            self._requeue_or_drop(item)
        else:
            self._finish(item, outcome, reason)

    def _write_all(self, item: PlayItem) -> tuple[Outcome, str | None]:
        stop = threading.Event()
        chunks = self._chunks(item, stop)
        attempts = 0
        reported_start = False
        try:
            for chunk in chunks:
                with self._cond:
                    reason = self._stop_current
                    preempt = reason is None and self._higher_waiting(item.priority)
                if reason or preempt:
                    self._fade_out(item, chunk)
                    stop.set()
                    return (Outcome.INTERRUPTED, "preempted") if preempt else (Outcome.STOPPED, reason)
                pcm = apply_gain(chunk, self._gain(item))
                while True:
                    try:
                        first = not reported_start
                        if first and item.first_frame_ns is None:
                            item.first_frame_ns = time.time_ns()
                        self.sink.write(pcm)
                        item.played_bytes += len(chunk)
                        if first:
                            # recorded after the first frame is out: bookkeeping never delays the sound
                            reported_start = True
                            self._report_start(item)
                        break
                    except AudioError as exc:
                        attempts += 1
                        self.on_event(EventType.ERROR, item, reason=str(exc))
                        if attempts >= self.device_retries:
                            return Outcome.FAILED, f"audio output: {exc}"
                        time.sleep(min(2.0, 0.5 * attempts))
        except AudioError as exc:
            return Outcome.FAILED, str(exc)
        finally:
            stop.set()
            if hasattr(chunks, "close"):
                chunks.close()
        return Outcome.FINISHED, None

    def _report_start(self, item: PlayItem) -> None:
        resumed = item.started_at is not None
        if item.started_at is None:
            item.started_at = item.first_frame_ns // 1_000_000 if item.first_frame_ns else _now_ms()
        self.on_event(EventType.PLAY_STARTED, item, volume=self._effective_volume(item),
                      detail={"resumed": True} if resumed else None)

    def _fade_out(self, item: PlayItem, chunk: bytes) -> None:
        """Play ``fade_ms`` more of the item, ramping to silence (no click on a pole)."""
        if self.fade_ms <= 0:
            return
        need = self.sink.sample_rate * self.fade_ms // 1000 * self.frame_bytes
        tail = chunk
        if item.kind is not ItemKind.RELAY and len(tail) < need:
            tail = item.pcm[item.position:item.position + need]
        tail = tail[:need]
        if item.kind is not ItemKind.RELAY:
            item.position += len(tail)
        try:
            self.sink.write(fade(tail, self._gain(item), 0.0, self.sink.channels))
        except AudioError:
            pass

    def _requeue_or_drop(self, item: PlayItem) -> None:
        self.on_event(EventType.INTERRUPTED, item, reason="preempted", volume=self._effective_volume(item))
        if item.interrupt_policy is InterruptPolicy.DROP:
            self._finish(item, Outcome.INTERRUPTED, "preempted", report=False)
            return
        if item.interrupt_policy is InterruptPolicy.RESTART:
            item.position, item.rep_done = 0, 0
        with self._cond:
            item.seq = -1 - item.seq if item.seq >= 0 else item.seq  # goes back ahead of its peers
            self._queue.append(item)
            self._cond.notify_all()

    def _finish(self, item: PlayItem, outcome: Outcome, reason: str | None, report: bool = True) -> None:
        if report:
            if outcome is Outcome.FINISHED:
                self.on_event(EventType.PLAY_FINISHED, item, volume=self._effective_volume(item))
            elif outcome is Outcome.FAILED:
                self.on_event(EventType.PLAY_FAILED, item, reason=reason)
            else:
                self.on_event(EventType.INTERRUPTED, item, reason=reason)
        if item.on_done is not None:
            try:
                item.on_done(item, outcome, reason)
            except Exception:
                log.exception("on_done callback failed for %s", item.key)
