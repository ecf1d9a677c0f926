"""Price keys: `midjourney@<action>[-<version>][-<speed>]`, falling back to shorter keys.

For an action priced under several keys the most specific wins, in this order:
action-version-speed, action-speed, action-version, action. An action with no key is free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "midjourney@"


def price_keys(action: str, version: str, speed: str) -> list[str]:
    base = PREFIX + action
    return [f"{base}-{version}-{speed}", f"{base}-{speed}", f"{base}-{version}", base]


@dataclass(frozen=True)
class Quote:
    key: str
    amount: int


class PriceTable:
    """The operator's prices. An empty table means billing is off."""

    def __init__(self, prices: Mapping[str, int] | None = None) -> None:
        prices = dict(prices or {})
        for key, value in prices.items():
            if not key.startswith(PREFIX):
                raise ValueError(f"price key {key!r} must start with {PREFIX!r}")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"price for {key!r} must be a whole number of credits >= 0, got {value!r}")
        self._prices = prices

    @property
    def enabled(self) -> bool:
        return bool(self._prices)

    def quote(self, action: str, version: str, speed: str) -> Quote | None:
        """The price of one action, or None when it is free."""
        for key in price_keys(action, version, speed):
            if key in self._prices:
                amount = self._prices[key]
                return Quote(key, amount) if amount > 0 else None
        return None
