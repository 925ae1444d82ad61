"""`loopml stream --files`: the CLI tails JSON-lines files into the state folder's SQLite store and resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loopml.events import append_jsonl, events_from_log
from loopml.features import OnlineExecutor
from loopml.timeutil import parse_time

ROOT = Path(__file__).resolve().parents[2]
FLIGHTS = str(ROOT / "examples" / "flights")


def stream(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "loopml.cli", "stream", "--project", FLIGHTS, *args, "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_stream_files_applies_lines_once_and_reports_quarantine(flights_project, flights_ws, tmp_path):
    events = list(events_from_log(flights_ws.log, OnlineExecutor(flights_project.features).columns(),
                                  start=parse_time("2013-03-01"), end=parse_time("2013-03-01T15:00:00Z")))
    assert len(events) > 100
    logs = tmp_path / "logs"
    logs.mkdir()
    append_jsonl(logs / "a.jsonl", events[:100])
    with open(logs / "a.jsonl", "a") as f:
        dep = next(e for e in events[:100] if e["source"] == "departures")
        f.write(json.dumps({**dep, "event_id": 10**9, "dep_delay": "late"}) + "\n")  # a string where minutes go
    state = str(tmp_path / "state")
    first = stream("--state", state, "--files", str(logs / "*.jsonl"))
    assert (first["applied"], first["quarantined"], first["total_applied"]) == (100, 1, 100)
    append_jsonl(logs / "b.jsonl", events[100:])
    second = stream("--state", state, "--files", str(logs / "*.jsonl"))
    assert second["applied"] == len(events) - 100
    assert second["total_applied"] == len(events) and second["total_quarantined"] == 1
    assert second["position"].endswith(f"b.jsonl:{(logs / 'b.jsonl').stat().st_size}")
