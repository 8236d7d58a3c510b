"""Market data in: one thread per venue WebSocket connection. Imports nothing from ``karb``."""
