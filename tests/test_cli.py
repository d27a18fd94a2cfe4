import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crewdash.cli.main import main
from tests.broken_projects import write_broken_projects

ROOT = Path(__file__).resolve().parent.parent


def test_run_reports_figures_and_writes_json(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "run.json"
    code = main(["run", "alpha", "beta", "--n", "3", "--latency", "0.3", "--json", str(out)])
    assert code == 0
    figures = json.loads(out.read_text())
    assert figures["crews"] == 5 and figures["succeeded"] == 5 and figures["failed"] == 0
    assert figures["wall_s"] < figures["sum_crew_s"]
    assert figures["speedup"] > 1
    assert [c["topic"] for c in figures["crews_detail"]][:2] == ["alpha", "beta"]
    assert "5/5 succeeded" in capsys.readouterr().out


def test_bad_input_is_a_message_and_exit_code_2(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["run"]) == 2
    assert "Enter at least one topic" in capsys.readouterr().err
    assert main(["run", "x", "--blueprint", "nope", "--latency", "0"]) == 2
    assert "no blueprint named 'nope'" in capsys.readouterr().err


def test_module_entry_point_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crewdash", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "run" in result.stdout and "demo-llm" in result.stdout


def test_a_byte_order_mark_at_the_start_of_a_topic_file_is_not_part_of_the_topic(
    tmp_path: Path,
) -> None:
    topics = tmp_path / "topics.txt"
    topics.write_bytes("alpha\nbeta\n".encode("utf-8-sig"))  # as Windows Notepad saves it
    out = tmp_path / "run.json"
    args = ["run", "alpha", "--file", str(topics), "--latency", "0", "--no-history"]
    assert main([*args, "--blueprint", "timing", "--json", str(out)]) == 0
    assert [c["topic"] for c in json.loads(out.read_text())["crews_detail"]] == ["alpha", "beta"]


def test_run_with_a_users_crews_folder_still_has_the_built_ins(tmp_path: Path) -> None:
    config = tmp_path / "mine" / "config"
    config.mkdir(parents=True)
    (config / "agents.yaml").write_text("a:\n  role: R\n  goal: G {topic}\n  backstory: B\n")
    (config / "tasks.yaml").write_text(
        't:\n  description: "Reply with exactly: {topic} mine"\n  expected_output: E\n  agent: a\n'
    )
    env = {**os.environ, "CREWDASH_CREWS_DIR": str(tmp_path)}
    for blueprint in ("timing", "mine"):
        command = ["run", "x", "--blueprint", blueprint, "--latency", "0", "--no-history"]
        result = subprocess.run(
            [sys.executable, "-m", "crewdash", *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert "1/1 succeeded" in result.stdout


PROJECTS = ROOT / "tests" / "projects"


def test_run_a_project_with_inputs_and_fan_out_reports_every_task(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(PROJECTS))
    monkeypatch.setenv("CREWDASH_OUTPUTS_DIR", str(tmp_path / "outputs"))
    topics = [f"cli subject {chr(65 + i)}x" for i in range(10)]
    for blueprint, extra in (
        ("analyst_crew", ["--input", "audience=CTOs"]),
        ("triage_flow", ["--input", "depth=deep", "--fan-out", "topic"]),
    ):
        out = tmp_path / f"{blueprint}.json"
        command = ["run", *topics, "--blueprint", blueprint, *extra, "--latency", "0.2"]
        assert main([*command, "--no-history", "--json", str(out)]) == 0, capsys.readouterr()
        figures = json.loads(out.read_text())
        assert figures["succeeded"] == 10 and figures["kind"] in ("crew", "flow")
        for crew in figures["crews_detail"]:
            assert crew["inputs"]["topic"] == crew["topic"]
            assert crew["tasks"] and all(
                set(t) == {"name", "agent", "output"} for t in crew["tasks"]
            )
            assert crew["topic"] in crew["tasks"][0]["output"]
            assert len(crew["files"]) == 1 and crew["topic"] in Path(crew["files"][0]).read_text()
        names = [t["name"] for t in figures["crews_detail"][0]["tasks"]]
        assert names == (
            ["gather", "measure", "brief"] if blueprint == "analyst_crew" else ["explain"]
        )


def test_blueprints_command_lists_kinds_inputs_and_broken_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_broken_projects(tmp_path)
    monkeypatch.setenv("CREWDASH_CREWS_DIR", f"{PROJECTS}{os.pathsep}{tmp_path}")
    assert main(["blueprints"]) == 1  # some are broken
    lines = {
        line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line[:1] != " "
    }
    assert "json_crew" in lines["brief_json"] and "tone='plain'" in lines["brief_json"]
    assert "flow_yaml" in lines["route_flow"] and "fan-out topic" in lines["route_flow"]
    assert "audience (required)" in lines["analyst_crew"]
    assert "BROKEN: bad_syntax/src/bad_syntax/crew.py line 3" in lines["bad_syntax"]


def test_bad_project_input_is_one_line_and_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_broken_projects(tmp_path)
    monkeypatch.setenv("CREWDASH_CREWS_DIR", f"{PROJECTS}{os.pathsep}{tmp_path}")
    cases = [
        (["--blueprint", "bad_syntax"], "error: bad_syntax/src/bad_syntax/crew.py line 3"),
        (["--blueprint", "analyst_crew"], "needs a value for {audience}"),
        (["--blueprint", "analyst_crew", "--input", "audience"], "--input needs key=value"),
        (["--blueprint", "brief_json", "--fan-out", "nope"], "has no placeholder {nope}"),
    ]
    for args, message in cases:
        assert main(["run", "x", *args, "--latency", "0", "--no-history"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "env",
    [
        {"CREWDASH_DEMO_SEED": "abc"},
        {"CREWDASH_DEMO_LATENCY": "soon"},
        {"CREWDASH_RUNNER": "ray", "CREWDASH_RAY_WORKERS": "many"},
    ],
)
def test_a_bad_setting_is_one_line_and_exit_code_2(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crewdash", "run", "x", "--no-history"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {list(env)[-1]} must be a")


def test_a_run_past_the_terminal_users_daily_cap_is_refused_with_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo model at a made-up $1,000 per million tokens (about $0.41 a crew estimated)
    under a $1.00 daily cap: four crews are refused before anything starts, one runs."""
    prices = tmp_path / "prices.yaml"
    prices.write_text("crewdash-demo: {input: 1000, output: 1000}\n")
    monkeypatch.setenv("CREWDASH_PRICES_FILE", str(prices))
    monkeypatch.setenv("CREWDASH_DAILY_CAP_USD", "1")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'history.db'}")
    assert main(["run", "t1", "t2", "t3", "t4", "--latency", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "error: this batch is estimated at $1.6" in err and "$1.0000 left" in err
    assert "Traceback" not in err
    assert main(["run", "t1", "--latency", "0.05"]) == 0


def test_delete_removes_an_ended_batch_refuses_a_running_one_and_is_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from crewdash.cli.tokens import terminal_person
    from crewdash.model.batch import Batch
    from crewdash.store.history import Store

    url = f"sqlite:///{tmp_path / 'history.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    store = Store(url)  # a live server's, as far as the CLI can tell
    try:
        ended, running = (
            Batch(batch_id, "timing", ["t"], model_label="demo", max_concurrency=1)
            for batch_id in ("c0ffee0000e1", "c0ffee0000a1")
        )
        for batch in (ended, running):
            store.create_batch(batch.snapshot())
            batch.mark_running(batch.run_ids[0])
        ended.mark_succeeded(ended.run_ids[0], "ok", None)
        store.finish_batch(ended.snapshot())
        store.save_crew(running.batch_id, running.snapshot().crews[0])

        assert main(["delete", "c0ffee0000e1"]) == 0
        assert "deleted batch c0ffee0000e1 (timing, 1 crew)" in capsys.readouterr().out
        assert store.load("c0ffee0000e1") is None
        assert main(["delete", "c0ffee0000a1"]) == 2
        assert "cancel it first" in capsys.readouterr().err
        assert store.load("c0ffee0000a1") is not None
        assert main(["delete", "c0ffee0000e1"]) == 2
        assert "no batch with id 'c0ffee0000e1'" in capsys.readouterr().err
        assert main(["delete", "../../etc"]) == 2  # no id of ours: refused before anything
        log = store.audit_log(action="delete")
        me = terminal_person().id
        assert [(e.user_id, e.object, e.outcome) for e in reversed(log)] == [
            (me, "batch c0ffee0000e1", "ok"),
            (me, "batch c0ffee0000a1", "refused"),
        ]
    finally:
        store.close()


def test_run_a_sheet_one_crew_per_row_and_write_it_back_enriched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from openpyxl import load_workbook

    sheet = tmp_path / "tickets.csv"
    sheet.write_text("id;Subject\n0042;Printer on fire\n0043;\n0044;Löschen geht nicht\n", "utf-8")
    out = tmp_path / "out.xlsx"
    args = ["run", "--sheet", str(sheet), "--map", "topic=Subject", "--out", str(out)]
    assert main([*args, "--latency", "0.05", "--no-history"]) == 0
    err = capsys.readouterr().err
    assert "delimiter ';'" in err and "row 3 skipped" in err and "Traceback" not in err
    table = [[c.value for c in row] for row in load_workbook(out).active.iter_rows()]
    assert [r[:2] for r in table] == [
        ["id", "Subject"],
        ["0042", "Printer on fire"],
        ["0043", None],
        ["0044", "Löschen geht nicht"],
    ]
    assert [r[2] for r in table] == ["crew: state", "succeeded", "skipped", "succeeded"]
    # a bad map or topics beside the sheet: one line, exit 2, nothing written
    assert main(["run", "--sheet", str(sheet), "--map", "topic=Nope", "--no-history"]) == 2
    assert "'Nope'" in capsys.readouterr().err
    assert main(["run", "x", "--sheet", str(sheet), "--no-history"]) == 2
    assert "give no topics with it" in capsys.readouterr().err
    assert main(["run", "--sheet", str(tmp_path / "missing.xlsx"), "--no-history"]) == 2
    assert "cannot read --sheet" in capsys.readouterr().err
