"""GPIO devices: the amplifier relay of a speaker node and the kiosk's answer buttons.

The relay: on → warm-up → audio → tail → off, and it stays on between back-to-back items: the
player calls ``acquire()`` before each item (which waits out the warm-up only when the
amplifier was off) and ``release()`` after it (which switches off after the tail unless
another item acquires it first). It is off at start and always off after ``close()``.
"""

from __future__ import annotations

import logging
import threading
import time

from .errors import HardwareError

log = logging.getLogger("thanthien.gpio")


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


class ButtonPanel:
    """Physical answer buttons (e.g. the five satisfaction levels), each with an optional LED.

    One press gives one answer: gpiozero debounces the contact and, after an accepted
    press, further presses are ignored for ``interval_s`` (a child hammering a button
    gives one rating). ``on_press(value)`` runs on gpiozero's thread; an exception in it
    is logged, never raised into gpiozero. The LEDs are lit while the panel waits for an
    answer; the chosen one blinks while the others go dark until the interval ends.
    """

    def __init__(self, buttons: list[tuple[int, int, int | None]], on_press, *, bounce_ms: int = 50,
                 interval_s: float = 3.0, pull_up: bool = True, pin_factory=None, clock=time.monotonic):
        from gpiozero import LED, Button, GPIOZeroError

        self._on_press = on_press
        self._interval = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._restore: threading.Timer | None = None
        self.accepted = 0
        self.ignored = 0
        self._buttons: list = []
        self._leds: dict[int, object] = {}
        try:
            for value, pin, led_pin in buttons:
                button = Button(pin, pull_up=pull_up, bounce_time=bounce_ms / 1000 if bounce_ms else None,
                                pin_factory=pin_factory)
                button.when_pressed = lambda _b=None, v=value: self._pressed(v)
                self._buttons.append(button)
                if led_pin is not None:
                    self._leds[value] = LED(led_pin, pin_factory=pin_factory, initial_value=True)
        except (GPIOZeroError, OSError) as exc:
            self.close()
            raise HardwareError(f"cannot use the answer buttons: {exc}") from exc

    def _pressed(self, value: int) -> None:
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self._interval:
                self.ignored += 1
                return
            self._last = now
            self.accepted += 1
        try:
            self._on_press(value)
        except Exception:  # noqa: BLE001 - a handler bug must not kill gpiozero's thread
            log.exception("answer button %s: handler failed", value)
        self._show_choice(value)

    def _show_choice(self, value: int) -> None:
        if not self._leds:
            return
        for v, led in self._leds.items():
            if v == value:
                led.blink(on_time=0.15, off_time=0.15, n=max(1, int(self._interval / 0.3)), background=True)
            else:
                led.off()
        if self._restore:
            self._restore.cancel()
        self._restore = threading.Timer(self._interval, self._all_on)
        self._restore.daemon = True
        self._restore.start()

    def _all_on(self) -> None:
        for led in self._leds.values():
            try:
                led.on()
            except Exception:  # noqa: BLE001 - closed while the timer ran
                pass

    def close(self) -> None:
        if self._restore:
            self._restore.cancel()
        for dev in [*self._buttons, *self._leds.values()]:
            dev.close()
        self._buttons, self._leds = [], {}

    def __enter__(self) -> "ButtonPanel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
