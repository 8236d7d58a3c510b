"""``python main.py sim``: serves both venues, prints URLs and keys, stops cleanly."""
from __future__ import annotations

import io
import re
import threading
from contextlib import redirect_stdout

import orjson
import websocket

from karb.cli import build_parser
from karb.commands import sim as sim_command
from tests.conftest import wait_until


def test_sim_command_prints_urls_that_serve_real_frames_and_stops_on_request():
    args = build_parser().parse_args(["sim", "--seed", "11"])
    stop, out, result = threading.Event(), io.StringIO(), []

    def serve():
        with redirect_stdout(out):
            result.append(sim_command.run(args, stop))

    thread = threading.Thread(target=serve, name="test-sim-cli")
    thread.start()
    try:
        wait_until(lambda: "serving" in out.getvalue(), 10, message="sim to start")
        text = out.getvalue()
        ws_url = re.search(r"upbit:\n  rest_url +\S+\n  ws_url +(\S+)", text).group(1)
        assert re.search(r"access_key +sim[0-9a-f]{37}", text)
        ws = websocket.create_connection(ws_url, timeout=3)
        ws.send('[{"ticket":"by-hand"},{"type":"orderbook","codes":["KRW-BTC.15"]},{"format":"SIMPLE"}]')
        frame = orjson.loads(ws.recv_data()[1])
        ws.close()
        assert frame["ty"] == "orderbook" and frame["cd"] == "KRW-BTC" and len(frame["obu"]) == 15
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive() and result == [0]
