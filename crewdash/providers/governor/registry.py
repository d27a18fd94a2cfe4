"""One governor per (endpoint, API key) in this process, found by a digest (the key is never
stored), its windows shared through Redis when `REDIS_URL` is set; and their states for the
page's gauges."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
from urllib.parse import urlsplit

from crewdash.base.redis_link import RedisLink
from crewdash.base.settings import process_settings
from crewdash.providers.governor.core import Governor, GovernorState

log = logging.getLogger(__name__)


def identity(endpoint: str, api_key: str) -> str:
    """The governor's id for one endpoint and key: a digest, so the key is never stored (nor
    sent to Redis)."""
    return hashlib.sha256(f"{endpoint}\n{api_key}".encode()).hexdigest()[:24]


_governors: dict[str, Governor] = {}
_governors_lock = threading.Lock()
_links: dict[str, RedisLink] = {}


def _link(redis_url: str | None) -> RedisLink | None:
    """The link to one Redis, shared by every governor on it (one warning when it is down);
    None without a URL, or with one Redis cannot be reached through (warned)."""
    if not redis_url:
        return None
    if redis_url not in _links:
        try:
            _links[redis_url] = RedisLink(redis_url)
        except Exception as exc:  # noqa: BLE001 - a bad REDIS_URL must not stop the calls
            log.warning("rate governor: Redis unusable (%s); governing this process alone", exc)
            return None
    return _links[redis_url]


def _loopback(endpoint: str) -> bool:
    host = (urlsplit(endpoint).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def governor_for(
    endpoint: str,
    api_key: str,
    rpm: int | None = None,
    tpm: int | None = None,
    redis_url: str | None = None,
    probe: bool | None = None,
) -> Governor:
    """The process-wide governor of one (endpoint, key); the limits given (settings) replace
    the ones it had from settings, learned ones stay.

    `probe` (limits unknown: the first call goes alone and its answer's headers teach the
    limits) defaults to on for remote endpoints and off for this machine's (a local model
    server rarely has limits, and waiting one call's latency at its first use would only
    slow it); the benchmark turns it on for the demo's emulated limits."""
    ident = identity(endpoint, api_key)
    with _governors_lock:
        gov = _governors.get(ident)
        if gov is None:
            wanted = not _loopback(endpoint) if probe is None else probe
            gov = Governor(endpoint, ident, rpm=rpm, tpm=tpm, link=_link(redis_url), probe=wanted)
            _governors[ident] = gov
            return gov
        if (gov.link.url if gov.link else None) != (redis_url or None):
            # the same endpoint and key under another REDIS_URL (a later runtime, or a local
            # server on a port an earlier one had): the windows follow today's Redis
            gov.relink(_link(redis_url))
    if probe is not None:
        gov.probe = probe
    if (rpm or tpm) and gov.configured != (rpm, tpm):
        gov.configure(rpm, tpm)
    return gov


def redis_problem() -> str | None:
    """Why the governors govern this process alone although `REDIS_URL` is set (None: Redis
    answers, is not set, or was not needed yet): for one warning on the page."""
    url = process_settings("REDIS_URL").redis_url
    with _governors_lock:
        link = _links.get(url) if url else None
    return link.problem if link is not None else None


def governor_states() -> list[GovernorState]:
    """Every governor of this process, for the page's gauges."""
    with _governors_lock:
        governors = list(_governors.values())
    return [g.state() for g in governors]
