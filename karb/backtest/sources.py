"""Book streams for a backtest: ``(t_ns, payload)`` in time order, applied to a ``BookBoard``.

``SimSource``: the sim's seeded generator (``karb.sim.market``) at book level: each
``BookEvent``'s float ladders (the generator's float mirror: prices and sizes as a feed decodes
them, converted once per level, not per event) go straight to the book as a snapshot
(``Book.apply_generated``: the generator builds them sorted, positive and uncrossed, so the
feed's validation is skipped); no JSON, sockets or HTTP. ``t_ns`` is ``origin_ns`` plus the
stream's time; the venue timestamp is the simulated wall clock.

``RecordingSource``: recorded frames (``feeds.recorder.read_recording``), each handed to the
same decoder the live feed thread uses (``feeds.UpbitBookProtocol``, for both venues' 2.0
WebSockets) with its receive time as ``t_ns``. A bad frame is counted and the market's book
reset, as the feed connection does. Bithumb's legacy delta feed needs REST snapshots a
recording does not hold, so it is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from feeds import UpbitBookProtocol
from feeds.protocol import FrameError
from feeds.recorder import read_recording
from karb.book import BookBoard
from karb.config import Config
from karb.model import Venue
from karb.schema import ConfigError
from karb.sim.config import SimConfig
from karb.sim.market import MarketGenerator


class BadRecording(ValueError):
    """A recording cannot be read; the message names the file, the line and why."""


class SimSource:
    def __init__(self, sim: SimConfig, markets: list[str], board: BookBoard, origin_ns: int,
                 wall_origin_ns: int):
        self.generator = MarketGenerator(sim, markets, float_depth=board.depth)
        self.origin_ns = origin_ns
        self._wall_ms = wall_origin_ns // 1_000_000 - origin_ns // 1_000_000
        self._apply = {(v, m): board.get(v, m).apply_generated for v in Venue for m in markets}
        self.bad_frames = 0

    def events(self) -> Iterator[tuple[int, object]]:
        origin = self.origin_ns
        for event in self.generator.events():
            yield origin + event.t_ns, event

    def market_of(self, event) -> str:
        return event.market

    def apply(self, event, t_ns: int) -> None:
        self._apply[(event.venue, event.market)](event.fbids, event.fasks,
                                                 t_ns // 1_000_000 + self._wall_ms, t_ns)


class RecordingSource:
    def __init__(self, path: str | Path, config: Config, board: BookBoard):
        self.paths = _recording_files(Path(path))
        self._protocols = {}
        for venue in Venue:
            vc = config.venues[venue]
            if venue is Venue.BITHUMB and vc.ws_api == "legacy":
                raise ConfigError("venues.bithumb.ws_api: a backtest replays 2.0 WebSocket frames; "
                                  "the legacy delta feed needs REST snapshots a recording lacks")
            self._protocols[venue.value] = UpbitBookProtocol(
                board.sink(venue), board.markets, vc.ws_levels, vc.ws_format, venue=venue.value,
                level_suffix=venue is Venue.UPBIT)
        self.bad_frames = 0

    def events(self) -> Iterator[tuple[int, object]]:
        for path in self.paths:
            line = 0
            try:
                for recv_ns, venue, frame in read_recording(path):
                    line += 1
                    yield recv_ns, (venue, frame)
            except BadRecording:
                raise
            except Exception as exc:  # noqa: BLE001 - gzip, JSON, missing keys: one clear line
                if exc.__class__.__name__.startswith("Recording"):  # already names file and line
                    raise BadRecording(str(exc)) from None
                raise BadRecording(f"{path}, line {line + 1}: {type(exc).__name__}: {exc}") from None

    def market_of(self, event) -> None:
        return None  # a frame may name any market: the caller looks at all

    def apply(self, event, t_ns: int) -> None:
        venue, frame = event
        protocol = self._protocols.get(venue)
        if protocol is None:
            self.bad_frames += 1
            return
        try:
            protocol.handle(frame.encode("utf-8"), t_ns)
        except FrameError as exc:  # as the feed connection does: count, reset the market
            self.bad_frames += 1
            protocol.on_bad_frame(exc.markets)
        except Exception:  # noqa: BLE001 - a decoder bug must not end the run; count it
            self.bad_frames += 1
            protocol.on_bad_frame(None)


def _recording_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith(".jsonl.gz"))
        if not files:
            raise ConfigError(f"--data: no .jsonl.gz recordings in {path}")
        return files
    if not path.exists():
        raise ConfigError(f"--data: {path} does not exist")
    return [path]
