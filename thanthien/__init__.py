"""thanthien: ward one-stop kiosk, radio station and smart loudspeaker nodes."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("thanthien")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
