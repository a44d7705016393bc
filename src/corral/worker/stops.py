"""Stop sequences over streamed text, with hold-back.

Generated text is released as soon as it cannot be part of a stop sequence. Text
that *could* still grow into one (the end of the output matches the start of a stop
string) is held back until the next piece decides it: either the stop string
completes, and generation ends with everything before it, or it does not, and the
held text is released. The stop string itself is never sent.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed text pieces in order; get back what is safe to emit and whether to stop."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """``(text to emit now, stopped)``. After a stop nothing more should be pushed."""
        if not self._stops:
            return text, False
        buffer = self._held + text
        cut = self._first_stop(buffer)
        if cut is not None:
            self._held = ""
            return buffer[:cut], True
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """The held text, when generation ends for another reason."""
        held, self._held = self._held, ""
        return held

    def _first_stop(self, buffer: str) -> int | None:
        found = [index for stop in self._stops if (index := buffer.find(stop)) >= 0]
        return min(found) if found else None

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest end of ``buffer`` that begins some stop string."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
