"""The demo server's request counters, read by benchmarks and tests from other threads."""

from __future__ import annotations

import threading


class ServerStats:
    """Thread-safe request counters: total requests and peak in-flight calls; `marked` counts
    the requests a `[demo:fail-NNN]` marker answered (not in `requests`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.marked = 0
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.max_delay = 0.0
        self.failures = 0
        self.ttfts: dict[str, float] = {}  # configured TTFT per streamed completion id (recent)

    def record_ttft(self, completion_id: str, ttft: float) -> None:
        """Keep what a stream was told to wait, so a benchmark can compare what it measured."""
        with self._lock:
            if len(self.ttfts) >= 10_000:
                self.ttfts.pop(next(iter(self.ttfts)))
            self.ttfts[completion_id] = ttft

    def enter(self, delay: float = 0.0) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            self.max_delay = max(self.max_delay, delay)

    def mark(self) -> None:
        with self._lock:
            self.marked += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reset_peak(self) -> None:
        """Start a new measurement: peak in-flight and slowest delay from now on."""
        with self._lock:
            self.peak_in_flight = self.in_flight
            self.max_delay = 0.0
