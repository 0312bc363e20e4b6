"""Run files are written atomically: a failure mid-write leaves the previous file and no debris."""
import json

import pytest

from featdrop import rundir


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    rundir.write_json(path, {"probe_main": 0.5})
    with pytest.raises(RuntimeError):
        with rundir.atomic_path(path) as tmp:
            tmp.write_text('{"probe_main": 0.')  # half a file, then the process "dies"
            raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"probe_main": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_history_round_trips_and_is_rewritten_whole(tmp_path):
    path = tmp_path / "history.jsonl"
    rundir.write_history(path, [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}])
    rundir.write_history(path, [{"epoch": 1, "loss": 2.0}])  # a resumed run rewrites exactly its rows
    assert rundir.read_history(path) == [{"epoch": 1, "loss": 2.0}]
    assert len(path.read_text().splitlines()) == 1
