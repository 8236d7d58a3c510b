"""stop_thread: sets the events, joins with a bound, reports a thread that will not end."""
import threading

from karb.threads import stop_thread


def test_stop_thread_with_cooperative_worker_ends_it():
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="test-worker", daemon=True)
    worker.start()
    assert stop_thread(worker, 2.0, stop) and not worker.is_alive()


def test_stop_thread_with_never_started_or_missing_thread_is_a_no_op():
    assert stop_thread(None, 0.1)
    assert stop_thread(threading.Thread(target=lambda: None), 0.1)


def test_stop_thread_with_worker_ignoring_its_event_reports_false():
    release = threading.Event()
    worker = threading.Thread(target=release.wait, name="test-stuck", daemon=True)
    worker.start()
    try:
        assert stop_thread(worker, 0.05, threading.Event()) is False
    finally:
        release.set()
        worker.join(2.0)
