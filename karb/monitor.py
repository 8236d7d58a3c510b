"""The ``monitor`` thread: once a second, take an ``EngineSnapshot``, show it, check alerts.

On a terminal (tmux) the panel is redrawn in place with the latest log lines under it (the
console log sink writes into ``recent`` instead of scrolling the panel away); otherwise (systemd, pipes) a one-line status
goes to the log every ``line_every_s`` so ``journalctl`` reads cleanly. The same snapshot feeds
the metrics endpoint, which only ever reads the latest one.
"""
from __future__ import annotations

import collections
import shutil
import sys
import threading
import time
from decimal import Decimal
from typing import Callable, TextIO

from loguru import logger

from karb.alerts import Alerter
from karb.config import MonitorConfig
from karb.metrics import MetricsServer
from karb.schema import ConfigError
from karb.status import EngineSnapshot, render_line, render_panel

CLEAR_HOME = "\x1b[H\x1b[2J"


class Monitor:
    def __init__(self, config: MonitorConfig, take_snapshot: Callable[[], EngineSnapshot],
                 out: TextIO | None = None, panel: bool | None = None, line_every_s: float = 10.0,
                 residual_tolerance_krw: Decimal = Decimal(0), alerter: Alerter | None = None):
        """``alerter``: one the caller starts and stops (the engine's outlives the monitor, for
        the shutdown notice); without it the monitor makes and runs its own."""
        self._config = config
        self._take = take_snapshot
        self._out = out or sys.stdout
        self._panel = self._out.isatty() if panel is None else panel
        self._line_every_s = line_every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="monitor", daemon=True)
        self.latest: EngineSnapshot | None = None
        self.recent: collections.deque[str] = collections.deque(maxlen=12)
        self._own_alerter = alerter is None
        self.alerter = alerter or Alerter(config.webhook_url, config.low_balance_krw,
                                          config.feed_down_alert_s,
                                          residual_tolerance_krw=residual_tolerance_krw,
                                          low_balance=config.low_balance)
        self.metrics: MetricsServer | None = None
        if config.metrics_port:
            try:
                self.metrics = MetricsServer(config.metrics_host, config.metrics_port, lambda: self.latest)
            except OSError as exc:
                raise ConfigError(f"monitor.metrics_port: cannot listen on {config.metrics_host}:"
                                  f"{config.metrics_port} ({exc.strerror}); pick another or 0 to disable") from None

    def start(self) -> "Monitor":
        if self._own_alerter:
            self.alerter.start()
        if self.metrics:
            self.metrics.start()
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        if self.metrics:
            self.metrics.stop()
        if self._own_alerter:
            self.alerter.stop()

    @property
    def panel(self) -> bool:
        return self._panel

    def log_sink(self, message) -> None:
        """A loguru sink for panel mode: keep the last lines to show under the panel."""
        self.recent.append(str(message).rstrip("\n"))

    def tick(self) -> EngineSnapshot:
        """Take, publish and show one snapshot; check alerts. Called by the monitor thread."""
        snapshot = self._take()
        self.latest = snapshot
        self.alerter.check(snapshot)
        return snapshot

    def _draw(self, snapshot: EngineSnapshot) -> None:
        width, height = shutil.get_terminal_size((100, 40))
        panel = render_panel(snapshot, width - 1)
        room = max(0, height - panel.count("\n") - 3)
        tail = [line[:width - 1] for line in list(self.recent)[-room:]] if room else []
        self._out.write(CLEAR_HOME + panel + "\n\n" + "\n".join(tail) + "\n")
        self._out.flush()

    def _loop(self) -> None:
        last_line = 0.0
        while not self._stop.wait(self._config.status_interval_s):
            try:
                snapshot = self.tick()
            except Exception:  # the monitor must never take the engine down
                logger.exception("monitor tick failed")
                continue
            if self._panel:
                self._draw(snapshot)
                self._out.flush()
            elif time.monotonic() - last_line >= self._line_every_s:
                last_line = time.monotonic()
                logger.info(render_line(snapshot))
