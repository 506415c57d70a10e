"""The end-to-end flow's logs, every line of every process, hold no planted identifier or secret."""

from __future__ import annotations

from tests.hostile.flow import FlowRun


def test_no_patient_identifier_or_secret_appears_in_any_log_line(flow_run: FlowRun) -> None:
    logs = flow_run.logs()
    names = {p.name for p in logs}
    expected = {"fiona-receiver.log", "fiona-classifier.log", "fiona-arrival.log"}
    assert names >= expected | {"fiona-redcap-sync.log", "fiona-exporter.log"}, names
    assert sum(len(lines) for lines in logs.values()) > 20  # the services did log
    planted = flow_run.planted()
    assert flow_run.token in planted and "Quistorpf" in planted and len(planted) >= 10
    offending = [
        f"{path.relative_to(flow_run.root)}:{number}: [{value}] {line[:300]}"
        for path, lines in logs.items()
        for number, line in enumerate(lines, 1)
        for value in planted
        if value.lower() in line.lower()
    ]
    assert not offending, "planted values found in logs:\n" + "\n".join(offending)
