"""A kiosk process that takes ratings from GPIO buttons as fast as they come
(run by tests/test_kiosk_durability.py, which kills it with SIGKILL at random).

    python tests/kiosk_rater.py CONFIG COUNT

Presses the five mock buttons in turn; prints ``ok <uuid>`` after each rating is
confirmed (the moment the screen would say "Cảm ơn"), and syncs with the station in the
background like the real kiosk.
"""

from __future__ import annotations

import sys


def main() -> int:
    from gpiozero.pins.mock import MockFactory

    from devices.config import load_config
    from devices.gpio import ButtonPanel
    from kiosk.config import KioskConfig
    from kiosk.core import Kiosk
    from kiosk.sync import StationSync

    cfg = load_config(sys.argv[1], KioskConfig)
    count = int(sys.argv[2])
    kiosk = Kiosk(cfg)
    sync = StationSync.from_config(kiosk)
    sync.backoff.delay = 0.2
    kiosk.listeners.append(lambda event, data: sync.poke())
    sync.start()
    factory = MockFactory()

    def on_press(level: int) -> None:
        uid = kiosk.rate(level, "button")
        sys.stdout.write(f"ok {uid}\n")
        sys.stdout.flush()

    pins = [5, 6, 13, 19, 26]
    with ButtonPanel([(i + 1, pin, None) for i, pin in enumerate(pins)], on_press, bounce_ms=0, interval_s=0,
                     pin_factory=factory):
        for n in range(count):
            pin = factory.pin(pins[n % 5])
            pin.drive_low()
            pin.drive_high()
    sync.stop()
    kiosk.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
