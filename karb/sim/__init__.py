"""Simulated Upbit and Bithumb venues on loopback (market, accounts, matching, faults)."""
