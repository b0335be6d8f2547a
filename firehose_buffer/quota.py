"""Per-delivery-stream Direct PUT quotas, shared by the client's limiter and the emulator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Quota:
    """What one delivery stream accepts per second (PutRecord and PutRecordBatch together).

    ``Quota.STANDARD`` is most regions' default, ``Quota.HIGH`` the default of us-east-1,
    us-west-2 and eu-west-1. AWS raises the three together, so scale them together too.
    """

    requests_per_second: float = 1_000.0
    bytes_per_second: float = float(MIB)
    records_per_second: float = 100_000.0

    STANDARD: ClassVar[Quota]
    HIGH: ClassVar[Quota]

    def __post_init__(self) -> None:
        for name in ("requests_per_second", "bytes_per_second", "records_per_second"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Quota.{name} must be a positive number, got {value!r}")

    @classmethod
    def named(cls, name: str) -> Quota:
        """``"standard"`` or ``"high"`` (case-insensitive)."""
        presets = {"standard": cls.STANDARD, "high": cls.HIGH}
        try:
            return presets[name.strip().lower()]
        except KeyError:
            known = sorted(presets)
            raise ValueError(f"unknown quota preset {name!r}; expected one of {known}") from None

    def scaled(self, factor: float) -> Quota:
        return Quota(
            self.requests_per_second * factor,
            self.bytes_per_second * factor,
            self.records_per_second * factor,
        )


Quota.STANDARD = Quota(1_000.0, float(MIB), 100_000.0)
Quota.HIGH = Quota(2_000.0, float(5 * MIB), 500_000.0)
