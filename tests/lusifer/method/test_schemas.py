"""Output schemas: finding the JSON in an answer, validating ratings and profiles."""

from __future__ import annotations

import pytest

from lusifer.core.errors import OutputValidationError
from lusifer.method.schemas import extract_json_object, parse_profile, parse_ratings, rating_schema

# --- extract_json_object ---------------------------------------------------------------------


def test_extract_plain_object() -> None:
    assert extract_json_object('{"1": 4, "2": 5}') == {"1": 4, "2": 5}


def test_extract_plain_object_with_surrounding_whitespace() -> None:
    assert extract_json_object('\n  {"profile": "x", "change": "y"}  \n') == {
        "profile": "x",
        "change": "y",
    }


def test_extract_json_fence() -> None:
    text = 'Here you go:\n```json\n{"10": 3, "11": 1}\n```\nThanks.'
    assert extract_json_object(text) == {"10": 3, "11": 1}


def test_extract_bare_fence() -> None:
    assert extract_json_object('```\n{"7": 2}\n```') == {"7": 2}


def test_extract_prose_around_json() -> None:
    text = 'Sure! Here are my ratings: {"1": 4, "2": 2} Hope this helps.'
    assert extract_json_object(text) == {"1": 4, "2": 2}


def test_extract_truncated_after_a_complete_value() -> None:
    # Cut short after a comma: the open object is closed after the last complete value.
    assert extract_json_object('{"1": 4, "2": 5,') == {"1": 4, "2": 5}
    assert extract_json_object('{"1": 4, "2": 5') == {"1": 4, "2": 5}


def test_extract_truncated_inside_a_string() -> None:
    assert extract_json_object('{"profile": "Loves noir and westerns') == {
        "profile": "Loves noir and westerns"
    }


def test_extract_truncated_inside_a_key_is_not_an_object() -> None:
    assert extract_json_object('{"1": 4, "2') is None


def test_extract_not_json_at_all() -> None:
    assert extract_json_object("I cannot rate these movies, sorry.") is None
    assert extract_json_object("") is None


def test_extract_ignores_json_that_is_not_an_object() -> None:
    assert extract_json_object("[4, 5, 3]") is None
    assert extract_json_object("4") is None


# --- parse_ratings ---------------------------------------------------------------------------


def test_parse_ratings_valid() -> None:
    ratings, problems = parse_ratings('{"1": 4, "2": 5, "3": 1}', [1, 2, 3])
    assert ratings == {1: 4, 2: 5, 3: 1}
    assert problems == []


def test_parse_ratings_accepts_digit_strings_and_integral_floats() -> None:
    ratings, problems = parse_ratings('{"1": "4", "2": 4.0, "3": " 2 ", "4": "5.0"}', [1, 2, 3, 4])
    assert ratings == {1: 4, 2: 4, 3: 2, 4: 5}
    assert all(isinstance(v, int) for v in ratings.values())
    assert problems == []


@pytest.mark.parametrize("bad", ["3.5", "7", "0", "-1", "true", '"x"', "null", "[4]"])
def test_parse_ratings_rejects_values_outside_integers_1_to_5(bad: str) -> None:
    ratings, problems = parse_ratings(f'{{"1": 4, "2": {bad}}}', [1, 2])
    assert ratings == {1: 4}
    # One problem names the item and its bad value, another lists it as not rated.
    assert any(p.startswith("item 2 got ") and "not an integer 1-5" in p for p in problems)
    assert "not rated: 2" in problems


def test_parse_ratings_reports_keys_not_asked() -> None:
    ratings, problems = parse_ratings('{"1": 4, "99": 5}', [1])
    assert ratings == {1: 4}
    assert problems == ["'99' is not one of the items asked"]


def test_parse_ratings_reports_missing_keys_in_order_asked() -> None:
    ratings, problems = parse_ratings('{"5": 3}', [7, 5, 2])
    assert ratings == {5: 3}
    assert problems == ["not rated: 7, 2"]


def test_parse_ratings_nested_under_one_key() -> None:
    ratings, problems = parse_ratings('{"ratings": {"1": 2, "2": 3}}', [1, 2])
    assert ratings == {1: 2, 2: 3}
    assert problems == []


def test_parse_ratings_fenced_with_prose() -> None:
    text = 'My ratings:\n```json\n{"12": 5, "13": 3}\n```'
    assert parse_ratings(text, [12, 13]) == ({12: 5, 13: 3}, [])


def test_parse_ratings_recovers_pairs_from_a_damaged_answer() -> None:
    # Cut inside the last pair: not an object, but the complete "id": rating pairs survive.
    ratings, problems = parse_ratings('{"1": 4, "2": "5", "3": ', [1, 2, 3])
    assert ratings == {1: 4, 2: 5}
    assert problems == ["not rated: 3"]


def test_parse_ratings_recovers_pairs_from_nested_truncated_answer() -> None:
    ratings, problems = parse_ratings('{"ratings": {"4": 1, "8": 2', [4, 8])
    assert ratings == {4: 1, 8: 2}
    assert problems == []


def test_parse_ratings_not_json_at_all() -> None:
    ratings, problems = parse_ratings("I would rather not say.", [1, 2])
    assert ratings == {}
    assert problems == ["the answer is not a JSON object"]


# --- rating_schema ---------------------------------------------------------------------------


def test_rating_schema_has_exactly_the_ids() -> None:
    schema = rating_schema([31, 7, 1200])
    assert schema["type"] == "object"
    assert list(schema["properties"]) == ["31", "7", "1200"]
    assert schema["required"] == ["31", "7", "1200"]
    assert schema["additionalProperties"] is False
    for prop in schema["properties"].values():
        assert prop == {"type": "integer", "enum": [1, 2, 3, 4, 5]}


def test_rating_schema_of_one_item() -> None:
    assert rating_schema([5]) == {
        "type": "object",
        "properties": {"5": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
        "required": ["5"],
        "additionalProperties": False,
    }


# --- parse_profile ---------------------------------------------------------------------------


def test_parse_profile_json() -> None:
    answer = parse_profile('{"profile": "Loves noir.", "change": "More noir than before."}')
    assert answer.profile == "Loves noir."
    assert answer.change == "More noir than before."


def test_parse_profile_json_without_change() -> None:
    answer = parse_profile('```json\n{"profile": "Likes comedies."}\n```')
    assert answer.profile == "Likes comedies."
    assert answer.change == ""


def test_parse_profile_prose_only_is_the_profile() -> None:
    text = "  This viewer enjoys 1990s thrillers and dislikes musicals.  "
    answer = parse_profile(text)
    assert answer.profile == text.strip()
    assert answer.change == ""


@pytest.mark.parametrize("text", ["", "   ", "ok", "{not json", "{}", '{"profile": ""}'])
def test_parse_profile_rejects_garbage_with_raw_text(text: str) -> None:
    with pytest.raises(OutputValidationError) as info:
        parse_profile(text)
    assert info.value.raw_text == text
    assert "\n" not in str(info.value)


def test_parse_profile_rejects_json_without_a_profile() -> None:
    text = '{"summary": "Enjoys long science fiction films a lot."}'
    with pytest.raises(OutputValidationError) as info:
        parse_profile(text)
    assert info.value.raw_text == text
    assert "profile" in str(info.value)


def test_raw_newlines_inside_strings_are_accepted() -> None:
    # What SmolLM2 under a llama.cpp grammar really answered (shortened).
    text = '{ "profile": "Likes dramas; Rating: 4 }\nLoves mysteries." ,"change" :"more drama" }'
    answer = parse_profile(text)
    assert answer.profile == "Likes dramas; Rating: 4 }\nLoves mysteries."
    assert answer.change == "more drama"


def test_a_profile_past_the_cap_is_refused_and_re_asked() -> None:
    from lusifer.core.errors import OutputValidationError
    from lusifer.method.schemas import MAX_PROFILE_CHARS, parse_profile

    prose = "likes long films. " * (MAX_PROFILE_CHARS // 10)
    for answer in (prose, '{"profile": "' + prose + '", "change": "none"}'):
        with pytest.raises(OutputValidationError, match="past the 8,000 kept"):
            parse_profile(answer)
    kept = parse_profile('{"profile": "likes noir films a lot", "change": "' + "x" * 5000 + '"}')
    assert len(kept.change) == 1000
