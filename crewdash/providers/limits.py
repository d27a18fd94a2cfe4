"""A provider's rate limits as a value: requests and tokens per minute per key. The governor
keeps a model's calls within them; the demo model enforces them to show that offline."""

from __future__ import annotations

from dataclasses import dataclass

from crewdash.base.errors import SettingsError

MAX_PER_MINUTE = 100_000_000


@dataclass(frozen=True)
class ProviderLimits:
    """Requests and tokens per minute per key; None: that limit is off."""

    rpm: int | None = None
    tpm: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("rpm", self.rpm), ("tpm", self.tpm)):
            if value is not None and not 1 <= value <= MAX_PER_MINUTE:
                raise SettingsError(f"{name} must be between 1 and {MAX_PER_MINUTE}, got {value}")

    @property
    def any(self) -> bool:
        return bool(self.rpm or self.tpm)

    @classmethod
    def parse(cls, spec: str) -> ProviderLimits:
        """`rpm=600,tpm=60000` (either may be left out; blank: no limits)."""
        values: dict[str, int] = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, sep, raw = part.partition("=")
            name = name.strip().lower()
            if not sep or name not in ("rpm", "tpm"):
                raise SettingsError(f"limits look like rpm=600,tpm=60000; got {part!r}")
            try:
                values[name] = int(raw.strip())
            except ValueError:
                raise SettingsError(f"{name} must be a whole number, got {raw.strip()!r}") from None
        return cls(**values)

    def describe(self) -> str:
        parts = [f"{v:,} {k.upper()}" for k, v in (("rpm", self.rpm), ("tpm", self.tpm)) if v]
        return ", ".join(parts) or "no rate limits"
