"""A row's result, read off a batch whose crews ran the sheet's runnable rows in order."""

import pytest

from crewdash.base.errors import SheetError
from crewdash.model.batch import Batch, CrewState, TaskResult, TokenUsage
from crewdash.present.sheet_results import RowResult, row_results, structured_fields
from crewdash.sheets.mapping import MappedRow

pytestmark = pytest.mark.timeout(60)


def rows() -> list[MappedRow]:
    return [
        MappedRow(0, {"topic": "a"}),
        MappedRow(1, skipped="'Topic' is blank and input {topic} needs a value"),
        MappedRow(2, {"topic": "b"}),
        MappedRow(3, {"topic": "c"}),
        MappedRow(4, {"topic": "d"}),
        MappedRow(5, {"topic": "e"}),
    ]


def test_each_row_gets_its_crew_in_order_and_a_skipped_row_its_reason() -> None:
    batch = Batch("b1", "timing", ["a", "b", "c", "d"], model_label="m", max_concurrency=4,
                  model="gpt-4o")  # fmt: skip
    a, b, c, _ = batch.run_ids
    batch.mark_running(a)
    batch.record_task(a, TaskResult("t1", "research", "notes"))
    batch.record_task(a, TaskResult("t2", "write", '{"score": 3}'))
    batch.mark_succeeded(a, '{"score": 3}', TokenUsage(10, 5, 15))
    batch.mark_running(b)
    batch.mark_failed(b, "RuntimeError: boom")
    batch.mark_running(c)
    results = row_results(batch.snapshot(), rows())
    assert [r.state for r in results] == [
        "succeeded", "skipped", "failed", "running", "queued", "not started",
    ]  # fmt: skip
    first = results[0]
    assert first.output == '{"score": 3}' and first.tokens == 15
    assert first.tasks == (("research", "notes"), ("write", '{"score": 3}'))
    assert first.cost_usd == pytest.approx(0.000075) and first.latency_s is not None
    assert first.fields == {"score": 3}
    assert results[1] == RowResult("skipped", error=rows()[1].skipped)
    assert results[2].error == "RuntimeError: boom" and results[2].output is None
    assert results[3].latency_s is not None and results[3].tokens == 0
    assert results[4] == RowResult("queued", tasks=(), latency_s=None)  # not started: no figures
    assert results[5] == RowResult()


def test_a_cancelled_crew_is_cancelled() -> None:
    batch = Batch("b2", "timing", ["a"], model_label="m", max_concurrency=1)
    batch.mark_failed(batch.run_ids[0], "cancelled by ann", CrewState.CANCELLED)
    (result,) = row_results(batch.snapshot(), [MappedRow(0, {"topic": "a"})])
    assert result.state == "cancelled" and result.error == "cancelled by ann"


def test_a_batch_with_more_crews_than_rows_that_run_is_refused() -> None:
    batch = Batch("b3", "timing", ["a", "b"], model_label="m", max_concurrency=1)
    with pytest.raises(SheetError, match="batch b3 has 2 crews for 1 rows that run"):
        row_results(batch.snapshot(), [MappedRow(0, {"topic": "a"}), MappedRow(1, skipped="x")])


@pytest.mark.parametrize(
    ("output", "fields"),
    [
        ('{"name": "Acme", "score": 0.5, "ok": true, "tags": ["a", "é"], "none": null}',
         {"name": "Acme", "score": 0.5, "ok": True, "tags": '["a", "é"]', "none": None}),
        ('```json\n{"a": {"b": 1}}\n```', {"a": '{"b": 1}'}),
        ("  {\"a\": 1}  ", {"a": 1}),
        ("[1, 2]", None),
        ("{not json", None),
        ("plain words", None),
        ("Here it is:\n```json\n{\"a\": 1}\n```", None),
        ("", None),
        (None, None),
    ],
)  # fmt: skip
def test_structured_fields_are_a_json_objects_fields_flattened_one_level(
    output: str | None, fields: dict[str, object] | None
) -> None:
    assert structured_fields(output) == fields
