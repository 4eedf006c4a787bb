"""The observation: a fixed-shape float32 vector in [-1, 1], and the profile text encoders.

Layout (``ObservationLayout`` gives the slices):

- ``recent``: the user's last ``window`` ratings (training history, then the episode's),
  oldest first and right-aligned (the newest is the last slot; empty slots are zeros). Each slot
  is ``[present, (rating - 1) / 4, item features...]`` (features: see ``Catalog``).
- ``profile``: the current profile text through the encoder (absent when there is none).
- ``progress``: steps taken / step budget.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from lusifer.core.errors import ConfigurationError

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class ProfileEncoder(Protocol):
    """Turns a profile text into ``dim`` numbers in [-1, 1] (values outside are clipped)."""

    @property
    def dim(self) -> int:
        """Length of the encoding."""
        ...

    def __call__(self, text: str) -> NDArray[Any]:
        """Encode one profile."""
        ...


class HashingEncoder:
    """A signed hashing bag of words, L2-normalised: cheap, deterministic, no model."""

    def __init__(self, dim: int = 64) -> None:
        if dim < 1:
            raise ConfigurationError(f"the profile encoding needs at least 1 dimension, got {dim}")
        self.dim = dim

    def __call__(self, text: str) -> NDArray[np.float32]:
        """Hash each word to a signed slot (crc32: stable across processes, unlike hash())."""
        vector = np.zeros(self.dim, dtype=np.float32)
        for token in _TOKEN.findall(text.lower()):
            code = zlib.crc32(token.encode())
            vector[code % self.dim] += 1.0 if code & 0x80000000 else -1.0
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector


@dataclass(frozen=True)
class ObservationLayout:
    """Where each part of the observation lies."""

    window: int
    slot_size: int
    profile_dim: int

    @property
    def size(self) -> int:
        """Length of the observation vector."""
        return self.window * self.slot_size + self.profile_dim + 1

    @property
    def recent(self) -> slice:
        """The recent ratings, ``window`` slots of ``slot_size``."""
        return slice(0, self.window * self.slot_size)

    @property
    def profile(self) -> slice:
        """The profile encoding."""
        start = self.window * self.slot_size
        return slice(start, start + self.profile_dim)

    @property
    def progress(self) -> slice:
        """Steps taken over the step budget."""
        return slice(self.size - 1, self.size)


class ObservationBuilder:
    """Builds observations from recent ratings, the profile and the step count."""

    def __init__(
        self,
        features: NDArray[np.float32],
        window: int,
        encoder: ProfileEncoder | None,
    ) -> None:
        self._features = features
        self._encoder = encoder
        self.layout = ObservationLayout(
            window=window,
            slot_size=2 + int(features.shape[1]),
            profile_dim=0 if encoder is None else int(encoder.dim),
        )

    def build(
        self, recent: Sequence[tuple[int, int]], profile: str, step: int, max_steps: int
    ) -> NDArray[np.float32]:
        """The observation; ``recent`` holds (item index, rating) pairs, oldest first."""
        layout = self.layout
        obs = np.zeros(layout.size, dtype=np.float32)
        slots = obs[layout.recent].reshape(layout.window, layout.slot_size)
        shown = list(recent)[-layout.window :]
        offset = layout.window - len(shown)
        for n, (index, rating) in enumerate(shown):
            slot = slots[offset + n]
            slot[0] = 1.0
            slot[1] = (rating - 1) / 4.0
            slot[2:] = self._features[index]
        if self._encoder is not None:
            encoded = np.asarray(self._encoder(profile), dtype=np.float32).reshape(-1)
            if encoded.shape != (layout.profile_dim,):
                raise ConfigurationError(
                    f"the profile encoder returned shape {encoded.shape}, "
                    f"not ({layout.profile_dim},) as its dim says"
                )
            obs[layout.profile] = np.clip(encoded, -1.0, 1.0)
        obs[layout.progress] = min(1.0, step / max_steps)
        return obs
