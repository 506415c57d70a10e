"""The facts routing decides on, read from the classifier's series summaries."""

import json
from pathlib import Path

from fiona_common.layout import Layout
from services.redcap_sync.routes import read_facts


def test_the_called_ae_title_comes_from_a_series_that_knows_it(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    study = layout.raw_dir / "1.2.3"
    study.mkdir(parents=True)
    unknown = {"AETitleCaller": "unknown", "AETitleCalled": "unknown", "CallerIP": "unknown"}
    known = {"AETitleCaller": "SCANNER", "AETitleCalled": "DEMO", "CallerIP": "10.0.0.7"}
    # Sorted by name, the series announced again from the archive (sender unknown) is first.
    (study / "1.2.3.1.json").write_text(json.dumps({"IncomingConnection": unknown}))
    (study / "1.2.3.2.json").write_text(json.dumps({"IncomingConnection": known}))
    facts = read_facts(layout, "default", "1.2.3")
    assert facts is not None
    assert (facts.calling_aet, facts.called_aet) == ("SCANNER", "DEMO")
