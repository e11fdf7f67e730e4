"""One exception hierarchy for the whole project.

Every error raised on purpose derives from :class:`ThanthienError` and, where one fits,
from the matching builtin too, so callers may catch either ``ValueError`` or the precise
project error. Protocol errors carry a short machine ``reason`` that a node sends back
verbatim on its ``ack`` topic.
"""

from __future__ import annotations


class ThanthienError(Exception):
    """Root of every error this project raises on purpose."""


# --- configuration and validation ---------------------------------------------------


class ValidationError(ThanthienError, ValueError):
    """Data did not match the expected shape; ``problems`` lists each field at fault."""

    def __init__(self, problems: list[str], *, source: str | None = None):
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = head + self.problems[0]
        else:
            msg = head + f"{len(self.problems)} problems:\n  - " + "\n  - ".join(self.problems)
        super().__init__(msg)


class ConfigError(ValidationError):
    """A configuration file is missing, unreadable, not TOML, or holds invalid values."""


# --- protocol ------------------------------------------------------------------------


class ProtocolError(ThanthienError, ValueError):
    """A message was refused. ``reason`` is the stable code sent back on ``ack``."""

    reason = "invalid"

    def __init__(self, detail: str = "", *, reason: str | None = None):
        if reason is not None:
            self.reason = reason
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)


class InvalidIdentifier(ProtocolError):
    reason = "bad_identifier"


class InvalidTopic(ProtocolError):
    reason = "bad_topic"


class PayloadTooLarge(ProtocolError):
    reason = "oversized"


class MalformedMessage(ProtocolError):
    reason = "bad_json"


class InvalidEnvelope(ProtocolError):
    reason = "bad_envelope"


class UnsupportedVersion(ProtocolError):
    reason = "unsupported_version"


class UnknownMessageType(ProtocolError):
    reason = "unknown_type"


class InvalidBody(ProtocolError):
    reason = "bad_body"


class MissingSignature(ProtocolError):
    reason = "missing_signature"


class UnknownKey(ProtocolError):
    reason = "unknown_key"


class BadSignature(ProtocolError):
    reason = "bad_signature"


class ExpiredMessage(ProtocolError):
    reason = "expired"


class FutureMessage(ProtocolError):
    reason = "issued_in_future"


class ReplayedMessage(ProtocolError):
    reason = "replayed"


class StaleDocument(ProtocolError):
    """A retained schedule/config older than the one already held."""

    reason = "stale_version"


class WrongRecipient(ProtocolError):
    """A message whose body names another site, device or group than the topic it came on."""

    reason = "wrong_recipient"


# --- transport -----------------------------------------------------------------------


class MqttError(ThanthienError, ConnectionError):
    """The MQTT link failed or is not up."""


class NotConnected(MqttError):
    pass


class PublishTimeout(MqttError, TimeoutError):
    """The broker did not acknowledge a QoS 1 publish in time."""


class PublishRefused(MqttError, PermissionError):
    """The broker answered a publish with a failure reason (MQTT 5), e.g. not authorized."""


# --- storage, media, audio, hardware -------------------------------------------------


class StorageError(ThanthienError, OSError):
    """A database or file could not be read or written."""


class MediaError(ThanthienError, OSError):
    """Media could not be fetched, verified or stored."""


class MediaIntegrityError(MediaError):
    """Downloaded bytes do not match the announced size or sha256."""


class AudioError(ThanthienError, OSError):
    """Audio could not be decoded or the output device could not be used."""


class DecodeError(AudioError):
    pass


class HardwareError(ThanthienError, OSError):
    """A GPIO pin or other device could not be driven."""
