"""Unwind policy: when the two legs filled different volumes, get back to flat, carefully.

Let ``excess = bought - sold``. Positive: we hold coin the sell leg did not sell; negative: we
sold coin the buy leg did not buy back. Steps, each an IOC limit sent with ``priority=True``:

1. retry: send the missing quantity again on the same venue as the short leg, at most
   ``unwind_tolerance_bps`` worse than the signal's limit (skipped when that leg's state is
   UNKNOWN: it may still exist, and a retry could double it);
2. flatten: undo the excess on the venue that filled, at most the tolerance worse than
   what that leg paid or got.

Up to ``unwind_attempts`` of each. Every step's limit is also bounded so that its worst-case
cost (against its reference price, plus fee) cannot exceed what is left of
``unwind_loss_cap_krw``; the realised cost is charged to that cap. It stops when flat, when
the excess is worth less than ``residual_tolerance_krw``, below a venue's minimum order, or
when the cap is spent. Each order is journalled (committed) before it is sent, its fills are
booked in the ledger, and each step is journalled as an incident; whatever is left is
reported as residual exposure. Runs on the leg thread that completed the trade.
"""
from __future__ import annotations

from decimal import Decimal

from loguru import logger

from karb.config import Config
from karb.journal import Journal
from karb.legs import Leg, LegState
from karb.ledger import Ledger, Reservation
from karb.model import OrderRequest, OrderType, Side, Signal, TimeInForce, Venue
from karb.placement import Placer
from karb.risk import taker_fee
from karb.rules import RulesBook

ZERO = Decimal(0)
BPS = Decimal(10_000)


def filled(legs: list[Leg], side: Side) -> tuple[Decimal, Decimal, Decimal]:
    """(volume, funds, fees) executed by ``legs`` on ``side``."""
    mine = [leg for leg in legs if leg.request.side is side]
    return (sum((l.executed_volume for l in mine), ZERO), sum((l.executed_funds for l in mine), ZERO),
            sum((l.paid_fee for l in mine), ZERO))


class Unwinder:
    def __init__(self, placer: Placer, rules: RulesBook, ledger: Ledger, journal: Journal,
                 config: Config):
        self.placer = placer
        self.rules = rules
        self.ledger = ledger
        self.journal = journal
        self.config = config
        self.settings = config.execution

    def run(self, signal: Signal, reservation: Reservation, buy: Leg, sell: Leg) -> list[Leg]:
        """Send unwind orders until flat or out of options; return the orders sent."""
        sent: list[Leg] = []
        legs = [buy, sell]
        excess = filled(legs, Side.BUY)[0] - filled(legs, Side.SELL)[0]
        if excess == 0:
            return sent
        long = excess > 0
        side = Side.SELL if long else Side.BUY
        short_leg, filled_leg = (sell, buy) if long else (buy, sell)
        steps = []
        if short_leg.state is not LegState.UNKNOWN:
            retry_ref = signal.sell_price if long else signal.buy_price
            steps += [("retry", short_leg.request.venue, retry_ref)] * self.settings.unwind_attempts
        avg = filled_leg.executed_funds / filled_leg.executed_volume
        steps += [("flatten", filled_leg.request.venue, avg)] * self.settings.unwind_attempts
        cap_left = self.settings.unwind_loss_cap_krw
        tolerance = Decimal(repr(self.settings.unwind_tolerance_bps)) / BPS
        for n, (kind, venue, ref) in enumerate(steps, 1):
            excess = abs(filled(legs + sent, Side.BUY)[0] - filled(legs + sent, Side.SELL)[0])
            rules = self.rules.get(venue, signal.market)
            qty = rules.floor_volume(excess)
            limit = self._limit(side, ref, qty, cap_left, tolerance, rules) if qty else ZERO
            stop = self._stop_reason(venue, excess, qty, ref, limit, cap_left, rules)
            if stop:
                self._note(signal, "unwind_stop", stop, "info" if excess == 0 else "warning")
                break
            leg = Leg(f"{kind}-{n}", OrderRequest(venue, signal.market, side, OrderType.LIMIT,
                                                  f"{signal.id}{kind[0]}{n}", price=limit,
                                                  volume=qty, tif=TimeInForce.IOC))
            if not self._cover(reservation, leg, signal.market):
                self._note(signal, "unwind_skipped", f"{leg.role}: not enough free balance on "
                           f"{venue.value} for {side.name.lower()} {qty} at {limit}")
                continue
            self.journal.record_intent_order(signal.id, leg)
            self.placer.run(signal.id, leg, priority=True)
            sent.append(leg)
            self.ledger.apply_fill(reservation, venue, signal.market, side, leg.executed_volume,
                                   leg.executed_funds, leg.paid_fee, fills=leg.fills)
            cost = self._cost(side, ref, leg)
            cap_left -= cost
            self._note(signal, "unwind_step",
                       f"{leg.role} {side.name.lower()} {qty} {signal.market} on {venue.value} "
                       f"limit {limit}: {leg.state.value}, filled {leg.executed_volume}, "
                       f"cost {cost:.0f} KRW, loss cap left {cap_left:.0f}")
        residual = filled(legs + sent, Side.BUY)[0] - filled(legs + sent, Side.SELL)[0]
        if abs(residual) * signal.buy_price > self.settings.residual_tolerance_krw:
            self._note(signal, "residual_exposure",
                       f"{residual} {signal.market.split('-')[1]} left unhedged after unwind",
                       "critical")
        return sent

    def _stop_reason(self, venue: Venue, excess: Decimal, qty: Decimal, ref: Decimal,
                     limit: Decimal, cap_left: Decimal, rules) -> str | None:
        if excess == 0:
            return "flat"
        if excess * ref <= self.settings.residual_tolerance_krw:
            return f"excess {excess} worth {excess * ref:.0f} KRW is within the residual tolerance"
        if cap_left <= 0:
            return f"unwind loss cap {self.settings.unwind_loss_cap_krw} KRW spent"
        if qty * limit < rules.min_total:
            return f"excess {excess} is below {venue.value}'s minimum order {rules.min_total} KRW"
        return None

    @staticmethod
    def _limit(side: Side, ref: Decimal, qty: Decimal, cap_left: Decimal, tolerance: Decimal,
               rules) -> Decimal:
        # the tighter of "tolerance past the reference" and "a full fill costs at most the cap"
        if side is Side.SELL:
            return rules.round_sell_price(max(ref * (1 - tolerance), ref - cap_left / qty))
        return rules.round_buy_price(min(ref * (1 + tolerance), ref + cap_left / qty))

    def _cover(self, reservation: Reservation, leg: Leg, market: str) -> bool:
        # make sure the reservation holds what this order can spend
        req = leg.request
        if req.side is Side.SELL:
            currency, need = market.split("-")[1], req.volume
        else:
            fee = taker_fee(self.config, self.rules, req.venue, market)
            currency, need = "KRW", req.volume * req.price * (1 + fee)
        short = need - reservation.held(req.venue, currency)
        return short <= 0 or self.ledger.extend(reservation, req.venue, currency, short)

    @staticmethod
    def _cost(side: Side, ref: Decimal, leg: Leg) -> Decimal:
        # KRW lost against the reference price, fee included
        against = ref * leg.executed_volume
        slip = against - leg.executed_funds if side is Side.SELL else leg.executed_funds - against
        return slip + leg.paid_fee

    def _note(self, signal: Signal, kind: str, detail: str, severity: str = "warning") -> None:
        self.journal.record_incident(kind, detail, signal.id, severity)
        log = {"critical": logger.critical, "info": logger.info}.get(severity, logger.warning)
        log("trade {} {}: {}", signal.id, kind, detail)
