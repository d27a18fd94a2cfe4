import pytest

from crewdash.errors import TopicError
from crewdash.topics import parse_topics


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
