"""Passive outlier ejection: an endpoint that fails several requests in a row is
taken out of rotation for a back-off period that doubles each time it is
ejected again (up to a limit), and is forgiven once it serves a request.

Pure policy: the router reports outcomes and applies the ejection it returns.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutlierConfig:
    consecutive_failures: int = 3  # failures in a row that eject an endpoint
    base_ejection: float = 2.0  # seconds out after the first ejection
    max_ejection: float = 30.0  # the doubling stops here

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError("consecutive_failures must be at least 1")
        if not 0 < self.base_ejection <= self.max_ejection:
            raise ValueError("need 0 < base_ejection <= max_ejection")


class OutlierDetector:
    def __init__(self, cfg: OutlierConfig = OutlierConfig()):
        self.cfg = cfg
        self._failures: dict[str, int] = {}
        self._ejections: dict[str, int] = {}  # times ejected since it last served well
        self.ejected_total = 0

    def success(self, url: str) -> None:
        if self._failures.get(url):
            self._failures[url] = 0
        if self._ejections.get(url):
            self._ejections[url] = 0

    def failure(self, url: str, now: float) -> float | None:
        """Count a failure; return the time the endpoint stays ejected until, if it is now ejected."""
        n = self._failures.get(url, 0) + 1
        if n < self.cfg.consecutive_failures:
            self._failures[url] = n
            return None
        self._failures[url] = 0
        k = self._ejections.get(url, 0)
        self._ejections[url] = k + 1
        self.ejected_total += 1
        return now + min(self.cfg.base_ejection * (2 ** k), self.cfg.max_ejection)

    def forget(self, keep: set[str]) -> None:
        """Drop the state of endpoints discovery no longer lists."""
        for d in (self._failures, self._ejections):
            for url in [u for u in d if u not in keep]:
                del d[url]
