"""Run files are written atomically: a failure mid-write leaves the previous file and no debris."""
import json

import pytest

from featdrop import runs


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    runs.write_json(path, {"probe_main": 0.5})
    with pytest.raises(RuntimeError):
        with runs.atomic_path(path) as tmp:
            tmp.write_text('{"probe_main": 0.')  # half a file, then the process "dies"
            raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"probe_main": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_history_round_trips_and_is_rewritten_whole(tmp_path):
    path = tmp_path / "history.jsonl"
    runs.write_history(path, [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}])
    runs.write_history(path, [{"epoch": 1, "loss": 2.0}])  # a resumed run rewrites exactly its rows
    assert runs.read_history(path) == [{"epoch": 1, "loss": 2.0}]
    assert len(path.read_text().splitlines()) == 1
