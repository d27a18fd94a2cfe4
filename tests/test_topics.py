import pytest

from crewdash.base.errors import TopicError
from crewdash.model.topics import parse_topics


def test_one_per_line_in_order() -> None:
    assert parse_topics("b\na\nc").items == ("b", "a", "c")


def test_blank_lines_and_duplicates_are_dropped_with_notes() -> None:
    topics = parse_topics("alpha\n\n  \nBeta\nalpha\nbeta \n")
    assert topics.items == ("alpha", "Beta")
    assert topics.notes == ("Dropped 2 blank lines.", "Dropped 2 duplicate topics.")


def test_clean_input_has_no_notes() -> None:
    assert parse_topics("x\ny").notes == ()


@pytest.mark.parametrize("text", ["", "\n\n", "   \n\t"])
def test_empty_input_is_refused(text: str) -> None:
    with pytest.raises(TopicError, match="at least one topic"):
        parse_topics(text)


def test_too_many_topics_is_refused() -> None:
    with pytest.raises(TopicError, match="101 topics is more than the limit of 100"):
        parse_topics("\n".join(f"t{i}" for i in range(101)))
    assert len(parse_topics("\n".join(f"t{i}" for i in range(100))).items) == 100


def test_too_long_topic_is_refused_naming_it() -> None:
    with pytest.raises(TopicError, match="Topic 2 is longer than 300 characters"):
        parse_topics("ok\n" + "x" * 301)
    assert parse_topics("y" * 300).items == ("y" * 300,)


def test_limits_are_configurable() -> None:
    with pytest.raises(TopicError):
        parse_topics("a\nb\nc", max_topics=2)
    with pytest.raises(TopicError):
        parse_topics("abcdef", max_chars=5)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("<script>alert(1)</script>", "<script>alert(1)</script>"),
        ("{topic} and {{braces}}", "{topic} and {{braces}}"),
        ("tab\there\x00nul\x1b[31m", "tab here nul [31m"),
        ("emoji 🚀 and ünïcödé", "emoji 🚀 and ünïcödé"),
        ("  spaced   out  ", "spaced out"),
        ("'; DROP TABLE batches; --", "'; DROP TABLE batches; --"),
    ],
)
def test_any_characters_are_plain_text(raw: str, expected: str) -> None:
    assert parse_topics(raw).items == (expected,)


def test_a_list_is_accepted_like_lines() -> None:
    topics = parse_topics(["a", "", "A", "b"])
    assert topics.items == ("a", "b")
    assert topics.notes == ("Dropped 1 blank topic.", "Dropped 1 duplicate topic.")


def test_non_text_items_are_refused() -> None:
    with pytest.raises(TopicError, match="must be text"):
        parse_topics(["a", 3])  # type: ignore[list-item]


ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"


def test_a_topic_of_only_zero_width_characters_is_blank() -> None:
    topics = parse_topics(f"{ZERO_WIDTH}\nreal\n \u200b \ufeff")
    assert topics.items == ("real",)
    assert topics.notes == ("Dropped 2 blank lines.",)
    with pytest.raises(TopicError, match="at least one topic"):
        parse_topics([ZERO_WIDTH])


def test_invisible_characters_go_at_the_edges_and_stay_inside() -> None:
    family = "👨\u200d👩\u200d👧"  # zero-width joiners hold the emoji together
    assert parse_topics(["\ufeff\u200b alpha \u2060", family]).items == ("alpha", family)


def test_runs_as_maps_every_topic_exactly_as_given_to_the_crew_that_answers_it() -> None:
    sent = [
        "  padded  ",
        "tab\there",
        "new\nline",
        "nul\x00x",
        "double  space",
        "no\xa0break",
        "crewai",
        "CrewAI",
        "crewai",
    ]
    topics = parse_topics(sent)
    assert topics.items == (
        "padded",
        "tab here",
        "new line",
        "nul x",
        "double space",
        "no break",
        "crewai",
    )
    assert dict(topics.runs_as) == {
        "  padded  ": "padded",
        "tab\there": "tab here",
        "new\nline": "new line",
        "nul\x00x": "nul x",
        "double  space": "double space",
        "no\xa0break": "no break",
        "crewai": "crewai",
        "CrewAI": "crewai",
    }
    assert "'CrewAI' is the same topic as 'crewai': one crew answers both." in topics.changes
    assert "'crewai' was given 2 times: one crew answers it." in topics.changes
    assert "'nul\\x00x' runs as 'nul x' (spaces, control or invisible characters tidied)." in (
        topics.changes
    )
    assert len(topics.changes) == 8  # one line per input not run exactly as written
    assert parse_topics(["a", "b"]).changes == ()


def test_limits_count_what_would_run_after_cleaning_and_duplicates() -> None:
    hundred_and_one = [f"t{i}" for i in range(100)] + ["T0"]
    assert len(parse_topics(hundred_and_one).items) == 100
    padded = "  " + "x" * 299 + " \t "
    assert parse_topics([padded]).items == ("x" * 299,)
    with pytest.raises(TopicError, match="Topic 3 is longer than 300 characters"):
        parse_topics(["a", "", " " + "y" * 301])  # numbered as given, blanks included


def test_refuse_blanks_names_the_blank_topics_in_plain_words() -> None:
    with pytest.raises(TopicError, match=r"^Topic 2 is blank \(only spaces, control or invisible"):
        parse_topics(["a", " \t"], refuse_blanks=True)
    with pytest.raises(TopicError, match=r"^Topic 1, 3 are blank"):
        parse_topics(["\x00", "b", ZERO_WIDTH], refuse_blanks=True)
