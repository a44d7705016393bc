"""corral: a self-hosted, multi-model LLM serving stack."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("corral")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
