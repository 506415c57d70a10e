import json
import logging
import urllib.request

from fiona_common.metrics import ErrorRecorder, Health, HttpServer


def test_readyz_reports_checks_details_and_logged_errors() -> None:
    health = Health("test")
    recorder = ErrorRecorder(health)
    logger = logging.getLogger("fiona.test.metrics")
    logger.addHandler(recorder)
    server = HttpServer("127.0.0.1", 0, health).start()
    try:
        health.set_check("listening", True)
        health.set_detail("event_backlog", 3)
        logger.error("disk is full")
        logger.warning("only a warning")
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz") as response:
            body = json.loads(response.read())
        assert body["ready"] and body["details"] == {"event_backlog": 3}
        assert [e["error"] for e in body["last_errors"]] == ["fiona.test.metrics: disk is full"]
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as response:
            assert b'fiona_service_ready{service="test"} 1.0' in response.read()
    finally:
        logger.removeHandler(recorder)
        server.stop()
