"""Which columns of a user's own tables hold each of Lusifer's fields.

Part of a run's configuration (``DatasetConfig``), so it lives with the configuration; the
loaders in ``lusifer.data`` read tables through it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ColumnMapping(BaseModel):
    """Names of the CSV columns that hold each of our fields; ``None`` means "not in the CSV"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = "user_id"
    item_id: str = "item_id"
    rating: str = "rating"
    # Without a timestamp column, the order of rows in the ratings file is taken as time order.
    timestamp: str | None = "timestamp"
    title: str = "title"
    # Without a year column, a "Title (1995)" suffix in the title gives the year.
    year: str | None = None
    genres: str | None = None
    genres_separator: str = Field(default="|", min_length=1)
    overview: str | None = None
    age: str | None = None
    gender: str | None = None
    occupation: str | None = None
