"""The one-line texts that describe a user and an item to the LLM (the paper's *_info)."""

from __future__ import annotations

from lusifer.data.model import Item, User

# MovieLens stores gender as M/F; the LLM reads words better than codes.
_GENDER_WORDS = {"m": "male", "f": "female"}


def _clean(text: str) -> str:
    # Overviews and titles may carry newlines or runs of spaces that would break the
    # one-line "key: value; ..." layout of the prompt.
    return " ".join(text.split())


def user_info(user: User) -> str:
    """Describe a user as "Age: 24; Gender: male; Occupation: technician" (unknowns skipped)."""
    if user.info:
        return _clean(user.info)
    parts: list[str] = []
    if user.age is not None:
        parts.append(f"Age: {user.age}")
    gender = _clean(user.gender or "")
    if gender:
        parts.append(f"Gender: {_GENDER_WORDS.get(gender.lower(), gender)}")
    occupation = _clean(user.occupation or "")
    if occupation:
        parts.append(f"Occupation: {occupation}")
    return "; ".join(parts)


def truncate_words(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters at a word boundary, marked with "…"."""
    if len(text) <= max_chars:
        return text
    if max_chars <= 1:
        return "…"[:max_chars]
    cut = text[: max_chars - 1]  # room for the ellipsis
    # Break at the last space unless the text continued the word past the cut point.
    if not text[max_chars - 1].isspace() and " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "…"


def item_info(item: Item, max_overview_chars: int = 600) -> str:
    """Describe an item as "Title: ...; Year: ...; Genres: ...; Overview: ..." (unknowns skipped).

    ``max_overview_chars`` bounds the overview (ellipsis included); 0 leaves it out.
    """
    if max_overview_chars < 0:
        raise ValueError(f"max_overview_chars must be >= 0, got {max_overview_chars}")
    parts = [f"Title: {_clean(item.title)}"]
    if item.year is not None:
        parts.append(f"Year: {item.year}")
    genres = [g for g in (_clean(g) for g in item.genres) if g]
    if genres:
        parts.append(f"Genres: {', '.join(genres)}")
    overview = _clean(item.overview or "")
    if overview and max_overview_chars > 0:
        parts.append(f"Overview: {truncate_words(overview, max_overview_chars)}")
    return "; ".join(parts)
