"""`hypervla compare`: episodes paired by index, gained and lost counted, exact sign test, mismatches refused."""
import json
import pathlib

import pytest

from hypervla_core.cli import main
from hypervla_core.compare import paired

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "results"


def report(per_task: dict, **keys) -> dict:
    return {"checkpoint": "m", "suite": "s", "seed": 0, **keys,
            "per_task": {t: {"successes": s} for t, s in per_task.items()}}


def test_counts_only_discordant_episodes_in_order():
    a = report({"x": [True, True, False, False, True], "y": [False] * 4})
    b = report({"x": [True, False, True, True, False, True], "y": [True] * 4, "z": [True]})
    c = paired(a, b)
    x = c["per_task"]["x"]
    # episode 6 of b has no partner: the first five are compared
    assert (x["episodes"], x["before"], x["after"], x["gained"], x["lost"]) == (5, 3, 3, 2, 2)
    assert x["p"] == 1.0
    assert "z" not in c["per_task"]
    assert c["total"]["gained"] == 6 and c["total"]["lost"] == 2 and c["total"]["episodes"] == 9
    # two-sided exact: P(X <= 2 or X >= 6 | n = 8, 1/2) = 2 * 37/256
    assert c["total"]["p"] == pytest.approx(74 / 256)
    assert c["per_task"]["y"]["p"] == pytest.approx(2 / 16)


@pytest.mark.parametrize("key,value", [("seed", 1), ("suite", "other"), ("inits", "others")])
def test_refuses_reports_of_other_episodes(key, value):
    a = report({"x": [True]})
    with pytest.raises(ValueError, match=key):
        paired(a, report({"x": [True]}, **{key: value}))


def test_refuses_reports_without_shared_task():
    with pytest.raises(ValueError, match="no task"):
        paired(report({"x": [True]}), report({"y": [True]}))


def test_cli_on_shipped_reports(tmp_path, capsys):
    # The figure docs/results.md quotes for the controller's limits: 13 gained, 5 lost, p = 0.10.
    out = tmp_path / "c.json"
    assert main(["compare", str(RESULTS / "eval_libero_goal_aadb.json"),
                 str(RESULTS / "eval_libero_goal_aadb_limits400.json"), "--json", str(out)]) == 0
    total = json.loads(out.read_text())["total"]
    assert (total["episodes"], total["gained"], total["lost"]) == (400, 13, 5)
    assert round(total["p"], 2) == 0.10
    assert "push_the_plate_to_the_front_of_the_stove" in capsys.readouterr().out


def test_cli_error_on_a_file_that_is_not_a_report(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["compare", str(bad), str(bad)]) != 0
    assert "not an eval report" in capsys.readouterr().err
    # a report with per_task but no episodes in it (a demo's, or a comparison's own output)
    other = str(RESULTS / "compare_libero_goal_twin_hv_s3000.json")
    assert main(["compare", other, other]) != 0
    assert "not an eval report" in capsys.readouterr().err
