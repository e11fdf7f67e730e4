"""Audio for speaker nodes: decode, generate tones, apply volume, write to a sink.

Everything is signed 16-bit little-endian PCM at the sink's rate and channel count.
Sinks: ``pyaudio`` (an ALSA device chosen by name), ``wav:PATH`` (writes exactly the PCM
that would have been played, in real time, for tests and the demo), ``null`` (paced
silence). A sink's ``write`` blocks for as long as the audio lasts, so the player's
notion of "now playing" is the loudspeaker's.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import time
import warnings
from array import array
from pathlib import Path
from typing import Iterator, Protocol

from .errors import AudioError, DecodeError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:  # C speed on Python ≤ 3.12 (Raspberry Pi OS Bookworm has 3.11)
        import audioop as _audioop
    except ImportError:  # pragma: no cover - Python 3.13+
        _audioop = None

SAMPLE_WIDTH = 2


def decode_file(path: Path | str, sample_rate: int, channels: int) -> bytes:
    """Decode MP3/WAV/FLAC/OGG into PCM at the given format; DecodeError if it is not audio."""
    import miniaudio

    try:
        decoded = miniaudio.decode_file(str(path), miniaudio.SampleFormat.SIGNED16, channels, sample_rate)
    except (miniaudio.DecodeError, miniaudio.MiniaudioError) as exc:
        raise DecodeError(f"{Path(path).name} is not decodable audio: {exc}") from None
    except OSError as exc:
        raise DecodeError(f"cannot read {path}: {exc.strerror}") from None
    pcm = decoded.samples.tobytes()
    if not pcm:
        raise DecodeError(f"{Path(path).name} holds no audio")
    return pcm


class _HttpSource:
    """A miniaudio StreamableSource reading an HTTP response as it arrives.

    Works for endless Icecast/VOV streams and for finite files alike (miniaudio's own
    IceCastClient waits forever at the end of a finite body).
    """

    def __init__(self, url: str, timeout_s: float):
        import requests

        try:
            self._resp = requests.get(url, stream=True, timeout=timeout_s, headers={"Icy-MetaData": "0"})
        except requests.RequestException as exc:
            raise AudioError(f"cannot open stream {url}: {type(exc).__name__}") from None
        if self._resp.status_code != 200:
            self._resp.close()
            raise AudioError(f"cannot open stream {url}: HTTP {self._resp.status_code}")
        self._chunks = self._resp.iter_content(8192)
        self._buf = b""

    def read(self, num_bytes: int) -> bytes:
        import requests

        while len(self._buf) < num_bytes:
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                break
            except requests.RequestException:
                break
        out, self._buf = self._buf[:num_bytes], self._buf[num_bytes:]
        return out

    def seek(self, offset: int, origin) -> bool:
        return False

    def close(self) -> None:
        self._resp.close()


def stream_url(url: str, sample_rate: int, channels: int, stop: threading.Event,
               timeout_s: float = 15.0) -> Iterator[bytes]:
    """Decode an HTTP audio stream (Icecast/VOV MP3, or a file over HTTP) chunk by chunk."""
    import miniaudio

    class Source(miniaudio.StreamableSource):
        def __init__(self, inner: _HttpSource):
            self.inner = inner

        def read(self, num_bytes: int) -> bytes:
            return self.inner.read(num_bytes)

    inner = _HttpSource(url, timeout_s)
    try:
        gen = miniaudio.stream_any(Source(inner), miniaudio.FileFormat.MP3, miniaudio.SampleFormat.SIGNED16,
                                   channels, sample_rate, frames_to_read=sample_rate // 10)
        next(gen)  # prime: the generator wants a first next() before send()
        while not stop.is_set():
            frames = gen.send(sample_rate // 10)
            if not len(frames):
                return
            yield frames.tobytes()
    except StopIteration:
        return
    except (miniaudio.DecodeError, miniaudio.MiniaudioError) as exc:
        raise AudioError(f"stream {url} failed: {exc}") from None
    finally:
        inner.close()


def tone(frequency_hz: float, duration_ms: int, sample_rate: int, channels: int, amplitude: float = 0.5) -> bytes:
    """A sine tone with 10 ms ramps at both ends (no click)."""
    n = int(sample_rate * duration_ms / 1000)
    ramp = max(1, int(sample_rate * 0.01))
    peak = int(32767 * amplitude)
    step = 2 * math.pi * frequency_hz / sample_rate
    samples = array("h", bytes(n * SAMPLE_WIDTH))
    for i in range(n):
        g = min(1.0, i / ramp, (n - 1 - i) / ramp)
        samples[i] = int(peak * g * math.sin(step * i))
    mono = samples.tobytes()
    return to_channels(mono, channels)


def silence(duration_ms: int, sample_rate: int, channels: int) -> bytes:
    return bytes(int(sample_rate * duration_ms / 1000) * channels * SAMPLE_WIDTH)


def identify_pattern(duration_ms: int, sample_rate: int, channels: int) -> bytes:
    """Three rising beeps and a pause, repeated: unmistakable on a pole, unlike a test tone."""
    unit = (tone(880, 150, sample_rate, channels) + silence(80, sample_rate, channels)
            + tone(1320, 150, sample_rate, channels) + silence(80, sample_rate, channels)
            + tone(1760, 300, sample_rate, channels) + silence(500, sample_rate, channels))
    frame = channels * SAMPLE_WIDTH
    total = int(sample_rate * duration_ms / 1000) * frame
    reps = max(1, math.ceil(total / len(unit)))
    return (unit * reps)[:max(total, len(unit))]


def to_channels(mono: bytes, channels: int) -> bytes:
    if channels == 1:
        return mono
    if _audioop is not None:
        return _audioop.tostereo(mono, SAMPLE_WIDTH, 1, 1)
    src = array("h", mono)
    out = array("h", bytes(len(mono) * 2))
    out[0::2] = src
    out[1::2] = src
    return out.tobytes()


def apply_gain(pcm: bytes, gain: float) -> bytes:
    """Scale samples by ``gain`` (0..1), clipping safely."""
    if gain >= 0.999:
        return pcm
    if gain <= 0.0:
        return bytes(len(pcm))
    if _audioop is not None:
        return _audioop.mul(pcm, SAMPLE_WIDTH, gain)
    samples = array("h", pcm)
    for i, s in enumerate(samples):
        samples[i] = int(s * gain)
    return samples.tobytes()


def volume_gain(volume: int) -> float:
    """Perceptual curve: volume 0-100 to amplitude (≈ 40 dB range, 0 is silent)."""
    if volume <= 0:
        return 0.0
    return 10 ** ((volume - 100) / 50)


def fade(pcm: bytes, start_gain: float, end_gain: float, channels: int) -> bytes:
    """A linear gain ramp over the whole chunk, in 5 ms steps."""
    frame = channels * SAMPLE_WIDTH
    frames = len(pcm) // frame
    if frames == 0:
        return pcm
    steps = max(1, frames // 240)
    per = math.ceil(frames / steps)
    out = bytearray()
    for s in range(steps):
        g = start_gain + (end_gain - start_gain) * (s + 0.5) / steps
        out += apply_gain(pcm[s * per * frame:(s + 1) * per * frame], g)
    return bytes(out)


def rms(pcm: bytes) -> float:
    """Root mean square level (0..32767), for tests and diagnostics."""
    if not pcm:
        return 0.0
    if _audioop is not None:
        return float(_audioop.rms(pcm, SAMPLE_WIDTH))
    samples = array("h", pcm[: len(pcm) // 2 * 2])
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


# --- sinks -------------------------------------------------------------------------------


class Sink(Protocol):
    sample_rate: int
    channels: int

    def write(self, pcm: bytes) -> None:
        """Play ``pcm``; returns when it has been handed to the device (real-time paced)."""

    def pause(self) -> None:
        """Nothing is playing now (idle); a real device may close to free the card."""

    def close(self) -> None: ...


class _Pacer:
    """Keeps a software sink in real time: write() returns when the audio would have ended."""

    def __init__(self, sample_rate: int, channels: int):
        self.bytes_per_s = sample_rate * channels * SAMPLE_WIDTH
        self._t0: float | None = None
        self._sent = 0.0

    def pace(self, nbytes: int) -> None:
        now = time.monotonic()
        if self._t0 is None or now > self._t0 + self._sent + 0.05:
            self._t0, self._sent = now, 0.0  # (re)start the clock after an idle gap
        self._sent += nbytes / self.bytes_per_s
        delay = self._t0 + self._sent - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def reset(self) -> None:
        self._t0 = None


class NullSink:
    """Discards audio, in real time (a node with no speaker attached, and benchmarks)."""

    def __init__(self, sample_rate: int, channels: int, paced: bool = True):
        self.sample_rate, self.channels = sample_rate, channels
        self._pacer = _Pacer(sample_rate, channels) if paced else None
        self.first_write_at: float | None = None

    def write(self, pcm: bytes) -> None:
        if self._pacer:
            self._pacer.pace(len(pcm))

    def pause(self) -> None:
        if self._pacer:
            self._pacer.reset()

    def close(self) -> None:
        pass


class WavSink:
    """Appends what would have played to one WAV file; the header is kept valid after
    every write, so a reader (a test, a demo user) can open it at any time."""

    def __init__(self, path: Path | str, sample_rate: int, channels: int, paced: bool = True):
        self.path = Path(path)
        self.sample_rate, self.channels = sample_rate, channels
        self._pacer = _Pacer(sample_rate, channels) if paced else None
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = self.path.exists() and self.path.stat().st_size >= 44
        self._f = open(self.path, "r+b" if existing else "w+b")
        if existing:
            self._f.seek(22)
            ch, rate = struct.unpack("<HI", self._f.read(6))
            if (ch, rate) != (channels, sample_rate):
                self._f.close()
                raise AudioError(f"{self.path} holds {ch} ch at {rate} Hz, not {channels} ch at {sample_rate} Hz")
            self._data = self.path.stat().st_size - 44
        else:
            self._data = 0
            self._write_header()
        self._f.seek(44 + self._data)

    def _write_header(self) -> None:
        byte_rate = self.sample_rate * self.channels * SAMPLE_WIDTH
        header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + self._data, b"WAVE", b"fmt ", 16, 1, self.channels,
                             self.sample_rate, byte_rate, self.channels * SAMPLE_WIDTH, 16, b"data", self._data)
        self._f.seek(0)
        self._f.write(header)

    def write(self, pcm: bytes) -> None:
        with self._lock:
            self._f.seek(44 + self._data)
            self._f.write(pcm)
            self._data += len(pcm)
            self._write_header()
            self._f.flush()
        if self._pacer:
            self._pacer.pace(len(pcm))

    def pause(self) -> None:
        if self._pacer:
            self._pacer.reset()

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()


class PyAudioSink:
    """An ALSA output through PortAudio, opened by device name.

    Blocking writes with a device buffer of ``buffer_ms`` (default 200 ms: enough that a
    Pi Zero 2 W never underruns while Python does other work). The device is opened
    lazily and closed when idle, so a card that was busy or unplugged is retried at the
    next item instead of killing the agent.
    """

    def __init__(self, device: str | None, sample_rate: int, channels: int, buffer_ms: int = 200):
        self.device = device
        self.sample_rate, self.channels = sample_rate, channels
        self.buffer_frames = max(256, sample_rate * buffer_ms // 1000)
        self._pa = None
        self._stream = None

    def _device_index(self, pa) -> int | None:
        if not self.device or self.device == "default":
            return None
        names = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if info.get("maxOutputChannels", 0) <= 0:
                continue
            names.append(info["name"])
            if info["name"] == self.device or self.device in info["name"]:
                return i
        raise AudioError(f"no audio output named {self.device!r}; outputs here: {', '.join(names) or 'none'}")

    def _open(self) -> None:
        import pyaudio

        try:
            self._pa = pyaudio.PyAudio()
            self._stream = self._pa.open(format=pyaudio.paInt16, channels=self.channels, rate=self.sample_rate,
                                         output=True, output_device_index=self._device_index(self._pa),
                                         frames_per_buffer=self.buffer_frames)
        except AudioError:
            self.close()
            raise
        except (OSError, ValueError) as exc:
            self.close()
            raise AudioError(f"cannot open audio output {self.device or 'default'}: {exc}") from None

    def write(self, pcm: bytes) -> None:
        if self._stream is None:
            self._open()
        try:
            self._stream.write(pcm, exception_on_underflow=False)
        except OSError as exc:
            self.close()
            raise AudioError(f"audio output {self.device or 'default'} failed: {exc}") from None

    def pause(self) -> None:
        self.close()

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop_stream()
                self._stream.close()
            except OSError:
                pass
            self._stream = None
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None


def open_sink(spec: str, *, device: str | None, sample_rate: int, channels: int, buffer_ms: int = 200) -> Sink:
    """Build the sink named in config: 'pyaudio', 'null' or 'wav:PATH'."""
    if spec == "null":
        return NullSink(sample_rate, channels)
    if spec == "pyaudio":
        return PyAudioSink(device, sample_rate, channels, buffer_ms)
    if spec.startswith("wav:") and len(spec) > 4:
        return WavSink(Path(spec[4:]).expanduser(), sample_rate, channels)
    raise AudioError(f"unknown audio sink {spec!r}: use 'pyaudio', 'null' or 'wav:PATH'")
