"""Text features of users and items."""

from __future__ import annotations

import pytest

from lusifer.data import Item, User, item_info, truncate_words, user_info

TOY_STORY = Item(
    item_id=1,
    title="Toy Story",
    year=1995,
    genres=("Animation", "Children's", "Comedy"),
    overview="Led by Woody, Andy's toys live happily in his room.",
)


def test_user_info_spells_out_gender() -> None:
    user = User(1, 24, "M", "technician")
    assert user_info(user) == "Age: 24; Gender: male; Occupation: technician"
    assert user_info(User(2, 53, "F", "other")) == "Age: 53; Gender: female; Occupation: other"


def test_user_info_skips_unknown_parts() -> None:
    assert user_info(User(3, None, None, "writer")) == "Occupation: writer"
    assert user_info(User(4, 30, " ", None)) == "Age: 30"
    assert user_info(User(5, None, None, None)) == ""


def test_user_info_keeps_other_genders_and_collapses_whitespace() -> None:
    assert user_info(User(6, None, "non-binary", "film\n  critic")) == (
        "Gender: non-binary; Occupation: film critic"
    )


def test_item_info_full() -> None:
    assert item_info(TOY_STORY) == (
        "Title: Toy Story; Year: 1995; Genres: Animation, Children's, Comedy; "
        "Overview: Led by Woody, Andy's toys live happily in his room."
    )


def test_item_info_skips_unknown_parts() -> None:
    assert item_info(Item(2, "Mystery Film", None, (), None)) == "Title: Mystery Film"


def test_item_info_collapses_newlines() -> None:
    item = Item(3, "Two\nLines", 2000, ("Drama",), "First line.\n\n  Second\tline.")
    assert item_info(item) == (
        "Title: Two Lines; Year: 2000; Genres: Drama; Overview: First line. Second line."
    )


def test_item_info_truncates_overview_at_a_word_boundary() -> None:
    item = Item(4, "T", None, (), "one two three four five")
    # 12 chars: "one two thr" + "…" would split "three", so cut back to "one two".
    assert item_info(item, max_overview_chars=12) == "Title: T; Overview: one two…"
    # Long enough: unchanged, no ellipsis.
    assert item_info(item, max_overview_chars=23) == "Title: T; Overview: one two three four five"
    # 0 leaves the overview out.
    assert item_info(item, max_overview_chars=0) == "Title: T"


def test_item_info_rejects_negative_limit() -> None:
    with pytest.raises(ValueError):
        item_info(TOY_STORY, max_overview_chars=-1)


def test_truncate_words() -> None:
    # The cut point falls on a space: the whole word "two" stays.
    assert truncate_words("one two three four", 8) == "one two…"
    # A single long word is cut hard.
    assert truncate_words("abcdefghij", 5) == "abcd…"
    # Trailing punctuation before the ellipsis is dropped.
    assert truncate_words("one, two three", 6) == "one…"
    assert truncate_words("short", 10) == "short"
    assert len(truncate_words("word " * 200, 600)) <= 600
