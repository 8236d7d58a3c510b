"""Bad recordings: a typed error naming the file, the line and why; kill -9 leaves readable lines."""
from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
import yaml

from feeds import FrameRecorder, RecordingError, RecordingTruncated, read_recording, read_recordings
from karb.cli import main

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as out:
        out.write(b"".join(line + b"\n" for line in lines))
    return path


def rec(t: int, venue: str = "upbit", frame: str = "{}") -> bytes:
    return orjson.dumps({"t": t, "venue": venue, "frame": frame})


def test_not_gzip_names_the_file(tmp_path):
    path = tmp_path / "plain.jsonl.gz"
    path.write_bytes(rec(1) + b"\n")
    with pytest.raises(RecordingError) as err:
        list(read_recording(path))
    assert err.value.line is None and str(err.value).startswith(f"{path}: not a gzip file")


@pytest.mark.parametrize("bad, why", [
    (b'{"t": 3, "venue": "upbit", "frame": ', "bad JSON"),
    (b'[1, 2]', "expected an object, was list"),
    (b'{"t": 3, "frame": "{}"}', "missing key 'venue'"),
    (b'{"t": "3", "venue": "upbit", "frame": "{}"}', "key 't' must be int"),
    (b'{"t": 3, "venue": "binance", "frame": "{}"}', "unknown venue 'binance' (upbit or bithumb)"),
])
def test_a_bad_line_names_file_line_and_why_after_the_good_lines(tmp_path, bad, why):
    path = write(tmp_path / "r.jsonl.gz", [rec(1), rec(2, "bithumb"), bad, rec(4)])
    got = []
    with pytest.raises(RecordingError) as err:
        for record in read_recording(path):
            got.append(record)
    assert got == [(1, "upbit", "{}"), (2, "bithumb", "{}")]
    assert (err.value.path, err.value.line) == (str(path), 3)
    assert str(err.value).startswith(f"{path}, line 3: {why}")


def test_every_cut_of_a_file_yields_a_prefix_of_whole_lines_then_says_truncated(tmp_path):
    records = [rec(i, frame='{"pad":"' + "x" * (i % 50) + '"}') for i in range(400)]
    whole = write(tmp_path / "whole.jsonl.gz", records).read_bytes()
    expected = [orjson.loads(r)["t"] for r in records]
    cut_path = tmp_path / "cut.jsonl.gz"
    for cut in range(20, len(whole) - 1, max(1, len(whole) // 60)):
        cut_path.write_bytes(whole[:cut])
        got = []
        with pytest.raises(RecordingTruncated) as err:
            for t, _, _ in read_recording(cut_path):
                got.append(t)
        assert got == expected[: len(got)]
        assert err.value.line == len(got) + 1 and "truncated" in str(err.value)
        assert [t for t, _, _ in read_recording(cut_path, truncated_ok=True)] == got
    assert [t for t, _, _ in read_recording(tmp_path / "whole.jsonl.gz")] == expected


def test_a_recorder_killed_with_sigkill_leaves_its_flushed_frames_readable(tmp_path):
    path = tmp_path / "killed.jsonl.gz"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from feeds import FrameRecorder
        recorder = FrameRecorder({str(path)!r}, flush_every_s=0.01)
        for i in range(50):
            recorder.record(i, "upbit", b'{{"i": %d}}' % i)
        while recorder.frames < 50:
            time.sleep(0.01)
        print("flushed", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "flushed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    got = []
    with pytest.raises(RecordingTruncated) as err:
        for t, _, _ in read_recording(path):
            got.append(t)
    assert got == list(range(50)) and err.value.line == 51
    assert len(list(read_recording(path, truncated_ok=True))) == 50
    # A recorder restarted on the same file appends a new gzip member after the cut one: the
    # cut is in the middle of the file now, which is corrupt data, named with its line.
    recorder = FrameRecorder(path)
    recorder.record(99, "bithumb", b"{}")
    assert recorder.stop(5.0)
    with pytest.raises(RecordingError, match=r"line 51: corrupt gzip data"):
        list(read_recording(path))


def test_a_directory_is_read_in_name_order_and_an_empty_one_is_an_error(tmp_path):
    write(tmp_path / "karb-20260101-01.jsonl.gz", [rec(3), rec(4)])
    write(tmp_path / "karb-20260101-00.jsonl.gz", [rec(1), rec(2)])
    (tmp_path / "notes.txt").write_text("not a recording")
    assert [t for t, _, _ in read_recordings(tmp_path)] == [1, 2, 3, 4]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecordingError, match=r"empty: no \*\.jsonl\.gz files"):
        list(read_recordings(empty))
    with pytest.raises(RecordingError, match=r"missing\.jsonl\.gz: no such file"):
        list(read_recordings(tmp_path / "missing.jsonl.gz"))


def test_cli_prints_one_line_and_exits_2_for_a_bad_recording(tmp_path, capsys):
    data = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text())
    data["journal"] = {"path": str(tmp_path / "j.sqlite")}
    data["log"] = {"level": "INFO", "file": str(tmp_path / "log.jsonl")}
    data["sim"]["replay_path"] = str(tmp_path / "nothing-here")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["run", "--sim", "--no-panel", "--config", str(config), "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"recording error: {tmp_path / 'nothing-here'}: no such file or directory"]


def test_sim_replay_reads_a_cut_file_to_its_cut_and_stops_at_a_bad_record(tmp_path):
    from karb.sim.replay import ReplaySource

    frame = '{"type":"orderbook","code":"KRW-BTC","orderbook_units":[{"ask_price":101,"ask_size":1,' \
            '"bid_price":100,"bid_size":1}]}'
    whole = write(tmp_path / "whole.jsonl.gz", [rec(i, frame=frame) for i in range(300)]).read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    replayed = list(ReplaySource(str(cut), ["KRW-BTC"]).events())
    assert 0 < len(replayed) < 300 and replayed[0].bids == ((100 * 10**8, 10**8),)
    bad = write(tmp_path / "bad.jsonl.gz", [rec(1, frame=frame), b'{"t": 2, "frame": "{}"}'])
    with pytest.raises(RecordingError, match=r"bad\.jsonl\.gz, line 2: missing key 'venue'"):
        list(ReplaySource(str(bad), ["KRW-BTC"]).events())
