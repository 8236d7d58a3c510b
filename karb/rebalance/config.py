"""The ``rebalance:`` config section (checked by ``karb.schema``; ``check`` adds the cross-checks).

``RebalanceConfig``
    mode (plan) - ``plan``: transfers are only proposed; ``auto``: the engine may withdraw
        (live trading also needs ``--live``: ``karb.rebalance.transfer.auto_transfer_refusal``);
    whitelist ({}) - destination venue -> asset -> network (``net_type``) -> address (and
        ``secondary_address``, a memo or tag): the only places coin is ever sent. Register the
        same addresses on the sending venue's site (both venues require it for API withdrawals);
    max_transfer ({}) - per asset, coin units per withdrawal; an asset without one is never sent;
    daily_cap ({}) - per asset, coin units withdrawn over any 24 hours, counted from the journal
        (a restart does not reset it); an asset without one is never sent;
    test_amount ({}) - per asset, the small first transfer to an address not yet proven (one
        with no arrived transfer in the journal); an asset without one is never sent to a new
        address;
    arrival_s ({}) - per network, how long a withdrawal may take to be credited before it is
        overdue (alert, asset blocked until an operator clears it);
    default_arrival_s (3600) - the same for networks not listed;
    lookup_window_s (900) - after a withdrawal's answer was lost, a venue withdrawal of the same
        asset, network and amount created this long before the request or later is taken as it.

The planner and the ``rebalance`` thread (``karb.rebalance.plan``, ``karb.rebalance.rebalancer``):

    check_s (60) - how often the thread follows open transfers and plans again;
    bridge (XRP) - the coin that carries KRW between the venues (buy, send, sell): cheap, fast;
    net_type ({}) - per asset, the network a transfer uses; default the asset code;
    network_fee ({}) - per asset, the withdrawal fee in coin when the venue's
        ``withdraw/chance`` cannot be read (an asset with neither is never planned);
    fee_refresh_s (3600) - how often the venues' withdrawal fees are read again;
    daily_volatility (0.05) - one standard deviation of a coin's daily price move, for the
        bridge's price risk. An assumption, not a cited figure: 5 % a day is the order of large
        altcoins such as XRP; set it for the bridge you use;
    earnings_window_s (86400) - the journal window the blocked directions' earnings are read
        over;
    horizon_s (86400) - how long a refilled side is expected to keep those directions
        trading: expected earnings = earnings per second over the window x this.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from karb.model import Venue
from karb.schema import ConfigError

POSITIVE = {"gt": 0}


@dataclass(frozen=True)
class Destination:
    address: str
    secondary_address: str | None = None


@dataclass(frozen=True)
class RebalanceConfig:
    mode: Literal["plan", "auto"] = "plan"
    whitelist: dict[str, dict[str, dict[str, Destination]]] = field(default_factory=dict)
    max_transfer: dict[str, Decimal] = field(default_factory=dict)
    daily_cap: dict[str, Decimal] = field(default_factory=dict)
    test_amount: dict[str, Decimal] = field(default_factory=dict)
    arrival_s: dict[str, float] = field(default_factory=dict)
    default_arrival_s: float = field(default=3600.0, metadata=POSITIVE)
    lookup_window_s: float = field(default=900.0, metadata=POSITIVE)
    check_s: float = field(default=60.0, metadata=POSITIVE)
    bridge: str = "XRP"
    net_type: dict[str, str] = field(default_factory=dict)
    network_fee: dict[str, Decimal] = field(default_factory=dict)
    fee_refresh_s: float = field(default=3600.0, metadata=POSITIVE)
    daily_volatility: Decimal = Decimal("0.05")
    earnings_window_s: float = field(default=86400.0, metadata=POSITIVE)
    horizon_s: float = field(default=86400.0, metadata=POSITIVE)

    def destination(self, venue: Venue, asset: str, net_type: str) -> Destination | None:
        return self.whitelist.get(venue.value, {}).get(asset, {}).get(net_type)

    def arrival_for(self, net_type: str) -> float:
        return self.arrival_s.get(net_type, self.default_arrival_s)


def check(config: RebalanceConfig) -> None:
    """Cross-checks the schema cannot express; raise ``ConfigError`` naming the key."""
    venues = {v.value for v in Venue}
    for venue, assets in config.whitelist.items():
        if venue not in venues:
            raise ConfigError(f"rebalance.whitelist.{venue}: unknown venue (upbit or bithumb)")
        for asset, networks in assets.items():
            for net_type, dest in networks.items():
                if not dest.address.strip():
                    raise ConfigError(f"rebalance.whitelist.{venue}.{asset}.{net_type}.address: must not be empty")
    if config.daily_volatility < 0:
        raise ConfigError(f"rebalance.daily_volatility: must not be negative, was {config.daily_volatility}")
    for key in ("max_transfer", "daily_cap", "test_amount", "arrival_s", "network_fee"):
        for name, value in getattr(config, key).items():
            if not value > 0:
                raise ConfigError(f"rebalance.{key}.{name}: must be above zero, was {value}")
    for asset, amount in config.test_amount.items():
        cap = config.max_transfer.get(asset)
        if cap is not None and amount > cap:
            raise ConfigError(f"rebalance.test_amount.{asset}: above rebalance.max_transfer.{asset} ({cap})")
