"""K-Arb: Upbit-Bithumb KRW spot arbitrage engine."""

__version__ = "0.1.0"
