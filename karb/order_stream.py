"""The private streams as the engine's first source of fills and balances.

``OrderStreams`` runs one ``FeedConnection`` per venue that has ``private_stream`` on (threads
``feed-upbit-private`` / ``feed-bithumb-private``, ``feeds.private`` decoding), signs each
connect with the REST client's JWT signer, and is the sink of both streams:

* ``myOrder`` events are kept per order (by venue order id and by client id, the newest
  ``MEMORY`` orders), with the executions (``trade`` events, de-duplicated by trade id), and
  wake whoever waits on that order (``wait``). ``result`` turns what is known of an order into
  the ``OrderResult`` a REST ``get_order`` would give, or None while it is not *complete*
  (executions reported do not add up to the cumulative amounts): the caller then asks REST.
* ``myAsset`` events go to ``on_asset`` listeners (``BalanceSync``).

A stream that is down, or that was down at any time since a caller started waiting, says so
(``epoch`` changes on every connect and disconnect): the caller falls back to REST. Nothing
here ever concludes that an order does not exist; silence means "ask REST".
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from urllib.parse import urlsplit, urlunsplit
from decimal import Decimal
from typing import Callable

from loguru import logger

from feeds.connection import FeedConnection
from feeds.private import (BITHUMB_PRIVATE_URL, UPBIT_PRIVATE_URL, AssetEvent, OrderEvent,
                           PrivateStreamProtocol)
from karb.config import Config
from karb.exchanges.upbit.parse import STATES
from karb.model import Balance, Fill, OrderResult, OrderStatus, OrderType, Side, Venue

MEMORY = 4096  # orders remembered per venue
ZERO = Decimal(0)
_STATUS = {**STATES, "trade": OrderStatus.OPEN}


def private_url(config: Config, venue: Venue) -> str | None:
    """``venues.<v>.private_ws_url``, else the private path on the public WebSocket's host
    (both venues serve it there: ``/websocket/v1`` -> Upbit ``/websocket/v1/private``,
    Bithumb ``/websocket/v2/private``). Never a host the config does not name, except
    Bithumb's documented one when the public feed is the legacy ``pubwss``; None if unknown."""
    vcfg = config.venues[venue]
    if vcfg.private_ws_url:
        return vcfg.private_ws_url
    parts = urlsplit(vcfg.ws_url)
    if parts.path.rstrip("/") == "/websocket/v1":
        path = urlsplit(UPBIT_PRIVATE_URL if venue is Venue.UPBIT else BITHUMB_PRIVATE_URL).path
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    if venue is Venue.BITHUMB and parts.hostname == "pubwss.bithumb.com":
        return BITHUMB_PRIVATE_URL
    return None


def stream_enabled(config: Config, venue: Venue) -> bool:
    """On when configured and the venue speaks it (Bithumb legacy keys have no JWT stream)."""
    vcfg = config.venues[venue]
    return (vcfg.private_stream and (venue is Venue.UPBIT or vcfg.api == "v2")
            and private_url(config, venue) is not None)


class _Order:
    __slots__ = ("event", "trades", "seq")

    def __init__(self) -> None:
        self.event: OrderEvent | None = None
        self.trades: dict[str, OrderEvent] = {}
        self.seq = 0


class OrderStreams:
    """Sink and store of both venues' private streams; thread-safe (one lock, one condition)."""

    def __init__(self, venues: list[Venue]) -> None:
        self._cond = threading.Condition()
        self._orders: dict[Venue, OrderedDict[str, _Order]] = {v: OrderedDict() for v in venues}
        self._by_client: dict[Venue, dict[str, str]] = {v: {} for v in venues}
        self._up = {v: False for v in venues}
        self._epoch = {v: 0 for v in venues}
        self._asset_listeners: list[Callable[[Venue, dict[str, Balance], int], None]] = []
        self._connections: dict[Venue, FeedConnection] = {}
        self.events = {v: 0 for v in venues}
        self.stale = 0
        self._stopping = False

    # --- wiring ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Config, signers: dict[Venue, Callable[[], str]]) -> "OrderStreams":
        """Streams for the venues that have one on and a signer (``() -> JWT``)."""
        venues = [v for v in Venue if stream_enabled(config, v) and v in signers]
        for venue in Venue:
            vcfg = config.venues[venue]
            if (vcfg.private_stream and (venue is Venue.UPBIT or vcfg.api == "v2")
                    and private_url(config, venue) is None):
                logger.warning("{}: no private stream (no URL known for ws_url {}; set venues.{}."
                               "private_ws_url); fills and balances from REST", venue.value,
                               vcfg.ws_url, venue.value)
        streams = cls(venues)
        feed = config.feed
        for venue in venues:
            protocol = PrivateStreamProtocol(streams.sink(venue), venue.value,
                                             "upbit" if venue is Venue.UPBIT else "bithumb",
                                             list(config.markets))
            sign = signers[venue]
            url = private_url(config, venue)
            assert url is not None  # stream_enabled
            streams._connections[venue] = FeedConnection(
                url, protocol, watchdog_s=feed.watchdog_s,
                ping_interval_s=feed.ping_interval_s, backoff_initial_s=feed.backoff_initial_s,
                backoff_max_s=feed.backoff_max_s,
                connect_timeout_s=config.venues[venue].connect_timeout_s,
                name=f"feed-{venue.value}-private",
                headers=lambda sign=sign: {"Authorization": f"Bearer {sign()}"})
        return streams

    def start(self) -> None:
        for connection in self._connections.values():
            connection.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stopping = True
        for connection in self._connections.values():
            connection.request_stop()
        for connection in self._connections.values():
            connection.stop(timeout_s)

    def add_asset_listener(self, listener: Callable[[Venue, dict[str, Balance], int], None]) -> None:
        self._asset_listeners.append(listener)

    def sink(self, venue: Venue) -> "_Sink":
        return _Sink(self, venue)

    @property
    def venues(self) -> list[Venue]:
        return list(self._up)

    def feed_stats(self) -> dict[str, dict]:
        """Each stream's connection counters (``FeedConnection.stats``), keyed ``<venue>-private``:
        the status line, metrics and the feed-down alert show them beside the public feeds."""
        return {f"{venue.value}-private": connection.stats()
                for venue, connection in self._connections.items()}

    def stats(self) -> dict:
        with self._cond:
            out = {v.value: {"up": self._up[v], "events": self.events[v], "epoch": self._epoch[v]}
                   for v in self._up}
        for venue, connection in self._connections.items():
            out[venue.value].update(connection.stats())
        return out

    # --- stream thread side -----------------------------------------------------------------
    def on_order(self, venue: Venue, event: OrderEvent) -> None:
        with self._cond:
            orders = self._orders[venue]
            key = event.order_id
            record = orders.get(key)
            if record is None:
                record = orders[key] = _Order()
                if len(orders) > MEMORY:
                    _, old = orders.popitem(last=False)
                    if old.event is not None and old.event.client_id:
                        self._by_client[venue].pop(old.event.client_id, None)
            if event.client_id:
                self._by_client[venue][event.client_id] = key
            if event.trade_id and event.trade_volume is not None:
                record.trades[event.trade_id] = event
            if record.event is None or _newer(event, record.event):
                record.event = event
            else:
                self.stale += 1
            record.seq += 1
            self.events[venue] += 1
            self._cond.notify_all()

    def on_asset(self, venue: Venue, event: AssetEvent) -> None:
        balances = {c: Balance(c, free, locked) for c, (free, locked) in event.balances.items()}
        for listener in self._asset_listeners:
            try:
                listener(venue, balances, event.timestamp_ms)
            except Exception:  # a listener's bug must not end the stream
                logger.exception("myAsset listener failed")

    def on_stream(self, venue: Venue, up: bool, reason: str) -> None:
        with self._cond:
            changed = self._up[venue] != up
            self._up[venue] = up
            self._epoch[venue] += 1
            self._cond.notify_all()
        if changed and not self._stopping:
            (logger.info if up else logger.warning)(
                "{} private stream {}{}", venue.value, "up" if up else "down",
                "" if up else f" ({reason}); fills and balances from REST until it is back")

    # --- consumers (leg threads, balance sync) ------------------------------------------------
    def is_up(self, venue: Venue) -> bool:
        with self._cond:
            return self._up.get(venue, False)

    def mark(self, venue: Venue, order_id: str | None, client_id: str | None) -> tuple[int, int]:
        """(epoch, order seq) now: what ``wait`` compares against."""
        with self._cond:
            record = self._find(venue, order_id, client_id)
            return self._epoch.get(venue, 0), record.seq if record else 0

    def wait(self, venue: Venue, order_id: str | None, client_id: str | None,
             mark: tuple[int, int], timeout_s: float) -> bool:
        """Wait until the order has an event after ``mark`` or the stream went down/up.

        Return True if there is news for this order and the stream stayed up since ``mark``;
        False on timeout or if the stream's connection changed (the caller must ask REST).
        """
        def news() -> bool:
            if self._epoch.get(venue, 0) != mark[0] or not self._up.get(venue, False):
                return True
            record = self._find(venue, order_id, client_id)
            return record is not None and record.seq > mark[1]

        with self._cond:
            self._cond.wait_for(news, timeout_s)
            record = self._find(venue, order_id, client_id)
            return (self._epoch.get(venue, 0) == mark[0] and self._up.get(venue, False)
                    and record is not None and record.seq > mark[1])

    def seen(self, venue: Venue, order_id: str | None, client_id: str | None) -> bool:
        """Has the stream told anything about this order?"""
        with self._cond:
            return self._find(venue, order_id, client_id) is not None

    def result(self, venue: Venue, order_id: str | None, client_id: str | None,
               order_type: OrderType) -> OrderResult | None:
        """What the stream says of one order, as a complete ``OrderResult``, or None."""
        with self._cond:
            record = self._find(venue, order_id, client_id)
            if record is None or record.event is None:
                return None
            return _to_result(venue, record.event, list(record.trades.values()), order_type)

    def _find(self, venue: Venue, order_id: str | None, client_id: str | None) -> _Order | None:
        orders = self._orders.get(venue)
        if orders is None:
            return None
        record = orders.get(order_id) if order_id else None
        if record is None and client_id:
            key = self._by_client[venue].get(client_id)
            record = orders.get(key) if key else None
        return record


class _Sink:
    """What ``PrivateStreamProtocol`` calls: forwards with the venue attached."""

    def __init__(self, streams: OrderStreams, venue: Venue) -> None:
        self._streams = streams
        self._venue = venue

    def on_order(self, event: OrderEvent) -> None:
        self._streams.on_order(self._venue, event)

    def on_asset(self, event: AssetEvent) -> None:
        self._streams.on_asset(self._venue, event)

    def on_stream(self, up: bool, reason: str) -> None:
        self._streams.on_stream(self._venue, up, reason)


_FINAL = ("done", "cancel")


def _newer(event: OrderEvent, than: OrderEvent) -> bool:
    """Does ``event`` say more than ``than``? Executed amounts only grow and a final state is
    the last word, so a late, stale event never replaces a newer one."""
    if than.state in _FINAL:
        return False
    if event.executed_volume != than.executed_volume:
        return event.executed_volume > than.executed_volume
    return event.state in _FINAL or event.timestamp_ms >= than.timestamp_ms


def _to_result(venue: Venue, event: OrderEvent, trades: list[OrderEvent],
               order_type: OrderType) -> OrderResult | None:
    if event.state not in _STATUS:  # watch / prevented: not a state this engine acts on
        return None
    fills = tuple(Fill(t.trade_price, t.trade_volume, t.trade_price * t.trade_volume, t.trade_id)
                  for t in trades if t.trade_price is not None and t.executed_volume <= event.executed_volume)
    filled = sum((f.volume for f in fills), ZERO)
    funds = sum((f.funds for f in fills), ZERO)
    if filled != event.executed_volume:
        return None  # an execution is missing (or not yet here): not complete, ask REST
    if event.executed_funds is not None and event.executed_funds != funds:
        return None
    fees = [t.trade_fee for t in trades if t.trade_fee is not None]
    paid_fee = event.paid_fee if event.paid_fee is not None else sum(fees, ZERO)
    return OrderResult(
        venue=venue, market=event.market, order_id=event.order_id, client_id=event.client_id,
        side=Side.BUY if event.side == "bid" else Side.SELL, order_type=order_type,
        status=_STATUS[event.state], executed_volume=event.executed_volume,
        executed_funds=funds, paid_fee=paid_fee, remaining_volume=event.remaining_volume or ZERO,
        fills=fills)
