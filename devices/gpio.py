"""The amplifier relay of a speaker node.

on → warm-up → audio → tail → off, and it stays on between back-to-back items: the
player calls ``acquire()`` before each item (which waits out the warm-up only when the
amplifier was off) and ``release()`` after it (which switches off after the tail unless
another item acquires it first). It is off at start and always off after ``close()``.
"""

from __future__ import annotations

import threading
import time

from .errors import HardwareError


class AmpRelay:
    """A gpiozero OutputDevice driving the amplifier's relay."""

    def __init__(self, pin: int, *, active_high: bool = True, warmup_ms: int = 1500, tail_ms: int = 2000,
                 pin_factory=None):
        from gpiozero import GPIOZeroError, OutputDevice

        try:
            self._dev = OutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
        except (GPIOZeroError, OSError) as exc:
            raise HardwareError(f"cannot drive the amplifier relay on GPIO{pin}: {exc}") from exc
        self.warmup_s = warmup_ms / 1000
        self.tail_s = tail_ms / 1000
        self._lock = threading.Lock()
        self._users = 0
        self._off_timer: threading.Timer | None = None
        self.switched_on_at: float | None = None

    @property
    def is_on(self) -> bool:
        return bool(self._dev.value)

    def acquire(self) -> None:
        """Switch on (waiting the warm-up) or keep on; cancels a pending tail switch-off."""
        with self._lock:
            self._users += 1
            if self._off_timer is not None:
                self._off_timer.cancel()
                self._off_timer = None
            if self.is_on:
                return
            self._dev.on()
            self.switched_on_at = time.monotonic()
        if self.warmup_s:
            time.sleep(self.warmup_s)

    def release(self) -> None:
        """Switch off after the tail, unless acquired again meanwhile."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users or not self.is_on:
                return
            if self.tail_s <= 0:
                self._dev.off()
                return
            self._off_timer = threading.Timer(self.tail_s, self._tail_done)
            self._off_timer.daemon = True
            self._off_timer.start()

    def _tail_done(self) -> None:
        with self._lock:
            if self._users == 0:
                self._dev.off()
            self._off_timer = None

    def off_now(self) -> None:
        with self._lock:
            if self._off_timer is not None:
                self._off_timer.cancel()
                self._off_timer = None
            self._users = 0
            self._dev.off()

    def close(self) -> None:
        if self._dev.closed:
            return
        self.off_now()
        self._dev.close()

    def __enter__(self) -> "AmpRelay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NoRelay:
    """A node without a relay (amplifier always powered): same interface, no waiting."""

    is_on = False

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass

    def off_now(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "NoRelay":
        return self

    def __exit__(self, *exc: object) -> None:
        pass
