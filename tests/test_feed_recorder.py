"""FrameRecorder: gzip JSON lines {"t", "venue", "frame"} written off the feed thread."""
from __future__ import annotations

import gzip

import orjson

from feeds import FrameRecorder
from feeds.recorder import read_recording


def test_recorder_writes_binary_and_text_frames_as_json_lines(tmp_path):
    path = tmp_path / "rec" / "frames.jsonl.gz"
    recorder = FrameRecorder(path, flush_every_s=0.01)
    recorder.record(111, "upbit", b'{"ty":"orderbook","cd":"KRW-BTC"}')
    recorder.record(222, "bithumb", '{"type":"orderbookdepth"}')
    recorder.record(333, "upbit", memoryview(b'{"status":"UP"}'))
    assert recorder.stop(5.0)
    lines = gzip.decompress(path.read_bytes()).splitlines()
    assert [orjson.loads(line) for line in lines] == [
        {"t": 111, "venue": "upbit", "frame": '{"ty":"orderbook","cd":"KRW-BTC"}'},
        {"t": 222, "venue": "bithumb", "frame": '{"type":"orderbookdepth"}'},
        {"t": 333, "venue": "upbit", "frame": '{"status":"UP"}'},
    ]
    assert recorder.frames == 3


def test_recorder_appends_to_an_existing_recording(tmp_path):
    path = tmp_path / "frames.jsonl.gz"
    for t in (1, 2):
        recorder = FrameRecorder(path)
        recorder.record(t, "upbit", b"{}")
        assert recorder.stop(5.0)
    assert [t for t, _, _ in read_recording(path)] == [1, 2]
