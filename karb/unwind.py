"""Unwind policy: when the two legs filled different volumes, get back to flat, carefully.

Let ``excess = bought - sold``. Positive: we hold coin the sell leg did not sell; negative: we
sold coin the buy leg did not buy back. Steps, each an IOC limit sent with ``priority=True``:

1. retry: send the missing quantity again on the same venue as the short leg, at most
   ``unwind_tolerance_bps`` worse than the signal's limit (skipped when an order for it there
   was only presumed never placed, after the venue had not heard of it for a while);
2. flatten: undo the excess on the venue that filled, at most the tolerance worse than
   what that leg paid or got.

Nothing is sent while any order of the trade is not final (it may still fill: a retry could
double it, a flatten could be against a fill we do not know of); the unwind stops there and
the executor's ``leg-resolver`` resumes it once the venue has answered (``run`` again with
the orders sent so far in ``sent``). Up to ``unwind_attempts`` of each step per trade. Every
step's limit is also bounded so that its worst-case cost (against its reference price, plus
fee) cannot exceed what is left of ``unwind_loss_cap_krw``; the realised cost is charged to
that cap. It stops when flat, when the excess is worth less than ``residual_tolerance_krw``,
below a venue's minimum order, or when the cap is spent. Each order is journalled (committed)
before it is sent, retried with backoff if the journal stalls (never sent unjournalled: if it
cannot be journalled, residual exposure is reported and trading halts); its fills are booked
in the ledger, and each step is journalled as an incident; whatever is left is reported as
residual exposure.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Callable

from loguru import logger

from karb.config import Config
from karb.journal import Journal, JournalError
from karb.legs import Leg, LegState
from karb.ledger import Ledger, Reservation
from karb.model import OrderRequest, OrderType, Side, Signal, TimeInForce, Venue
from karb.placement import Placer
from karb.risk import taker_fee
from karb.rules import RulesBook

ZERO = Decimal(0)
BPS = Decimal(10_000)
JOURNAL_ATTEMPTS = 5  # an unwind order's intent, with backoff 0.25, 0.5, 1, 2 s between
JOURNAL_BACKOFF_S = 0.25


def filled(legs: list[Leg], side: Side) -> tuple[Decimal, Decimal, Decimal]:
    """(volume, funds, fees) executed by ``legs`` on ``side``."""
    mine = [leg for leg in legs if leg.request.side is side]
    return (sum((l.executed_volume for l in mine), ZERO), sum((l.executed_funds for l in mine), ZERO),
            sum((l.paid_fee for l in mine), ZERO))


def presumed_unplaced(leg: Leg) -> bool:
    """The venue never answered for ``leg`` and never heard of it: it may yet appear."""
    return leg.state is LegState.REJECTED and LegState.UNKNOWN in (s for s, _ in leg.history)


class Unwinder:
    def __init__(self, placer: Placer, rules: RulesBook, ledger: Ledger, journal: Journal,
                 config: Config, halt: Callable[[str], None] | None = None):
        self.placer = placer
        self.rules = rules
        self.ledger = ledger
        self.journal = journal
        self.config = config
        self.settings = config.execution
        self.halt = halt or (lambda reason: logger.critical("trading must halt: {}", reason))

    def run(self, signal: Signal, reservation: Reservation, buy: Leg, sell: Leg,
            sent: list[Leg] | None = None) -> list[Leg]:
        """Send unwind orders until flat, out of options, or one is left not final; return
        every unwind order of the trade. ``sent`` holds its earlier unwind orders (a resumed
        unwind) and receives each new one once journalled, before it is placed."""
        sent = [] if sent is None else sent
        legs = [buy, sell]
        unsettled = [leg.client_id for leg in legs + sent if not leg.final]
        if unsettled:
            self._note(signal, "unwind_deferred", f"{', '.join(unsettled)} not final and may "
                       "still fill: no retry or flatten until resolved", "critical")
            return sent
        excess = filled(legs + sent, Side.BUY)[0] - filled(legs + sent, Side.SELL)[0]
        if excess == 0:
            return sent
        long = excess > 0
        side = Side.SELL if long else Side.BUY
        short_leg, filled_leg = (sell, buy) if long else (buy, sell)
        retry_ref = signal.sell_price if long else signal.buy_price
        avg = filled_leg.executed_funds / filled_leg.executed_volume
        refs = {"retry": retry_ref, "flatten": avg}
        done = {kind: sum(1 for leg in sent if leg.role.startswith(kind)) for kind in refs}
        steps = []
        if not any(presumed_unplaced(leg) for leg in [short_leg, *sent]
                   if leg.request.venue is short_leg.request.venue and leg.request.side is side):
            steps += [("retry", short_leg.request.venue)] * (self.settings.unwind_attempts - done["retry"])
        steps += [("flatten", filled_leg.request.venue)] * (self.settings.unwind_attempts - done["flatten"])
        cap_left = self.settings.unwind_loss_cap_krw - sum(
            (self._cost(side, refs[leg.role.split("-")[0]], leg) for leg in sent), ZERO)
        tolerance = Decimal(repr(self.settings.unwind_tolerance_bps)) / BPS
        numbers = self._numbers(signal, sent)
        for kind, venue in steps:
            ref = refs[kind]
            n = next(numbers)
            excess = abs(filled(legs + sent, Side.BUY)[0] - filled(legs + sent, Side.SELL)[0])
            rules = self.rules.get(venue, signal.market)
            qty = rules.floor_volume(excess)
            limit = self._limit(side, ref, qty, cap_left, tolerance, rules) if qty else ZERO
            stop = self._stop_reason(venue, excess, qty, ref, limit, cap_left, rules)
            if stop:
                accepted = excess * ref <= self.settings.residual_tolerance_krw  # flat or dust
                self._note(signal, "unwind_stop", stop, "info" if accepted else "warning")
                break
            leg = Leg(f"{kind}-{n}", OrderRequest(venue, signal.market, side, OrderType.LIMIT,
                                                  f"{signal.id}{kind[0]}{n}", price=limit,
                                                  volume=qty, tif=TimeInForce.IOC))
            if not self._cover(reservation, leg, signal.market):
                self._note(signal, "unwind_skipped", f"{leg.role}: not enough free balance on "
                           f"{venue.value} for {side.name.lower()} {qty} at {limit}")
                continue
            if not self._journal_intent(signal, leg):
                residual = filled(legs + sent, Side.BUY)[0] - filled(legs + sent, Side.SELL)[0]
                self._note(signal, "residual_exposure", f"{residual} {signal.market.split('-')[1]} "
                           f"left unhedged: {leg.role} could not be journalled, not sent", "critical")
                self.halt(f"unwind of {signal.id} stopped: journal failed {JOURNAL_ATTEMPTS} times; "
                          f"{residual} {signal.market} unhedged")
                return sent
            sent.append(leg)
            self.placer.run(signal.id, leg, priority=True)
            self.ledger.apply_fill(reservation, venue, signal.market, side, leg.executed_volume,
                                   leg.executed_funds, leg.paid_fee, fills=leg.fills)
            cost = self._cost(side, ref, leg)
            cap_left -= cost
            self._note(signal, "unwind_step",
                       f"{leg.role} {side.name.lower()} {qty} {signal.market} on {venue.value} "
                       f"limit {limit}: {leg.state.value}, filled {leg.executed_volume}, "
                       f"cost {cost:.0f} KRW, loss cap left {cap_left:.0f}")
            if not leg.final:
                self._note(signal, "unwind_paused", f"{leg.role} {leg.client_id} still "
                           f"{leg.state.value}: resumes once it is resolved", "critical")
                return sent
        residual = filled(legs + sent, Side.BUY)[0] - filled(legs + sent, Side.SELL)[0]
        if abs(residual) * signal.buy_price > self.settings.residual_tolerance_krw:
            self._note(signal, "residual_exposure",
                       f"{residual} {signal.market.split('-')[1]} left unhedged after unwind",
                       "critical")
        return sent

    @staticmethod
    def _numbers(signal: Signal, sent: list[Leg]):
        # step numbers whose client ids are not taken by an earlier unwind order of the trade
        taken = {leg.client_id for leg in sent}
        n = len(sent)
        while True:
            n += 1
            if not any(f"{signal.id}{k}{n}" in taken for k in "rf"):
                yield n

    def _journal_intent(self, signal: Signal, leg: Leg) -> bool:
        # intent before send: a stalled journal is retried (bounded), never skipped
        delay = JOURNAL_BACKOFF_S
        for attempt in range(1, JOURNAL_ATTEMPTS + 1):
            try:
                self.journal.record_intent_order(signal.id, leg)
                return True
            except JournalError as exc:
                self._note(signal, "unwind_journal_retry", f"{leg.role} {leg.client_id}: intent "
                           f"not journalled ({exc}), attempt {attempt} of {JOURNAL_ATTEMPTS}",
                           "critical")
                if attempt < JOURNAL_ATTEMPTS:
                    self.placer.pause(delay)
                    delay *= 2
        return False

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
