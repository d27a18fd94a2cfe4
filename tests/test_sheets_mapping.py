"""Mapping a sheet's rows to a blueprint's inputs: a column or a fixed value each, cells as
text, and a row that cannot run skipped with its reason, never dropped."""

from datetime import date, datetime

import pytest

from crewdash.base.errors import SheetError
from crewdash.blueprints.catalog import load_blueprint
from crewdash.sheets.mapping import InputMap, MappedRow, rows_to_inputs, suggest_map
from crewdash.sheets.reader import read_sheet
from crewdash.sheets.sheet import Sheet

pytestmark = pytest.mark.timeout(60)


def sheet(columns: tuple[str, ...], *rows: tuple[object, ...]) -> Sheet:
    return Sheet("leads.xlsx", "xlsx", columns, tuple(rows), "Excel sheet 'S' of 1")


def test_a_column_whose_name_matches_an_input_loosely_is_suggested() -> None:
    columns = ["Company Name", "TOPIC", "first-name", "Notes", "company_name"]
    found = suggest_map(["company_name", "topic", "first_name", "city"], columns)
    assert found.columns == {
        "company_name": "Company Name",  # the first of two loose twins
        "topic": "TOPIC",
        "first_name": "first-name",
    }
    assert found.values == {} and "city" not in found.inputs


def test_cells_become_text_a_person_would_type() -> None:
    s = sheet(
        ("Topic", "When", "Count", "Ratio", "Flag"),
        ("AI", date(2024, 1, 2), 3.0, 0.25, True),
        ("007", datetime(2024, 1, 2, 9, 30), 12, 1e-7, False),
    )
    m = InputMap(
        columns={"topic": "Topic", "when": "When", "count": "Count", "ratio": "Ratio"},
        values={"audience": "analysts", "flag": ""},
    )
    rows = rows_to_inputs(s, m, required={"topic"})
    assert rows == (
        MappedRow(0, {"audience": "analysts", "topic": "AI", "when": "2024-01-02",
                      "count": "3", "ratio": "0.25"}),
        MappedRow(1, {"audience": "analysts", "topic": "007", "when": "2024-01-02 09:30:00",
                      "count": "12", "ratio": "1e-07"}),
    )  # fmt: skip
    assert [r.number for r in rows] == [2, 3] and all(r.runs for r in rows)


def test_a_blank_required_cell_skips_its_row_saying_why_a_blank_optional_one_is_left_out() -> None:
    s = sheet(
        ("Topic", "City"),
        ("AI", None),
        ("  ", "Oslo"),
        (None, None),
        ("Robots", "Lima"),
    )
    m = InputMap(columns={"topic": "Topic", "city": "City"})
    rows = rows_to_inputs(s, m, required={"topic"})
    assert [r.row for r in rows] == [0, 1, 2, 3]  # every row, in order: none dropped
    assert rows[0] == MappedRow(0, {"topic": "AI"})  # the blueprint's default for {city}
    assert rows[1].skipped == "'Topic' is blank and input {topic} needs a value"
    assert not rows[1].runs and rows[1].inputs == {}
    assert rows[2].skipped == "the row is blank"
    assert rows[3] == MappedRow(3, {"topic": "Robots", "city": "Lima"})


def test_a_mapped_column_the_sheet_does_not_have_is_refused_listing_its_columns() -> None:
    s = sheet(("Topic", "City"), ("AI", "Oslo"))
    with pytest.raises(
        SheetError,
        match=r"^input \{city\} is mapped to column 'Town', which leads\.xlsx does not have; "
        r"its columns: 'Topic', 'City'$",
    ):
        rows_to_inputs(s, InputMap(columns={"city": "Town"}))


def test_a_required_input_without_a_source_or_with_a_blank_fixed_value_is_refused() -> None:
    s = sheet(("Topic",), ("AI",))
    with pytest.raises(SheetError, match=r"input \{city\} needs a value: map it to a column"):
        rows_to_inputs(s, InputMap(columns={"topic": "Topic"}), required={"topic", "city"})
    with pytest.raises(SheetError, match=r"input \{city\} needs a value: its fixed value is blank"):
        rows_to_inputs(s, InputMap({"topic": "Topic"}, {"city": " "}), required={"city"})
    with pytest.raises(SheetError, match=r"input \{topic\} has both a column and a fixed value"):
        InputMap({"topic": "Topic"}, {"topic": "AI"})


def test_mapped_rows_fill_a_real_blueprint_like_typed_topics_do() -> None:
    blueprint = load_blueprint("research")
    data = b"Subject,Extra\nquantum sensors,x\n,y\n"
    s = read_sheet(data, "topics.csv")
    m = suggest_map(blueprint.inputs, s.columns)
    assert m.columns == {}  # nothing matches "Subject": the person picks it
    m = InputMap(columns={blueprint.fan_out: "Subject"})
    rows = rows_to_inputs(s, m, blueprint.required)
    assert rows[1].skipped == f"'Subject' is blank and input {{{blueprint.fan_out}}} needs a value"
    inputs = rows[0].inputs
    kickoff = blueprint.inputs_for(inputs[blueprint.fan_out], inputs, blueprint.fan_out)
    assert kickoff[blueprint.fan_out] == "quantum sensors"
