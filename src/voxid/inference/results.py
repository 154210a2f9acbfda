"""What the recogniser answers: `Verification`, `Identification` (ranked `Candidate`s) and
`SpeakerInfo`, frozen values with a `to_dict` for JSON where the service sends them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple


class Candidate(NamedTuple):
    """One ranked answer of `identify`: unpacks as `(name, score)`."""

    name: str
    score: float


@dataclass(frozen=True)
class Verification:
    """The answer of `verify`: `accepted` is `score >= threshold`.

    `source` is "enrolled" or "training" (a training speaker's AAM class weight);
    `std` is the spread of the score over MC-dropout samples (None when deterministic).
    """

    name: str
    score: float
    threshold: float
    accepted: bool
    source: str
    std: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class Identification:
    """The answer of `identify`: best match or "unknown", and the ranked candidates.

    `name` is the best candidate when its score reaches `threshold` (open set), else
    "unknown"; `candidates` are the top-k `(name, score)` pairs, best first, whatever the
    threshold; `sources` maps each candidate to "enrolled", "training" or "class";
    `stds` holds MC-dropout spreads (empty when deterministic).
    """

    name: str
    score: float
    threshold: float
    accepted: bool
    candidates: list[Candidate]
    sources: dict[str, str] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (candidates as a list of {name, score, source[, std]}).

        >>> Identification("ruth", 0.8, 0.5, True, [Candidate("ruth", 0.8)],
        ...                {"ruth": "enrolled"}).to_dict()["candidates"]
        [{'name': 'ruth', 'score': 0.8, 'source': 'enrolled'}]
        """
        out = asdict(self)
        out["candidates"] = [
            {
                "name": c.name,
                "score": c.score,
                "source": self.sources.get(c.name, ""),
                **({"std": self.stds[c.name]} if c.name in self.stds else {}),
            }
            for c in self.candidates
        ]
        del out["sources"], out["stds"]
        return out


@dataclass(frozen=True)
class SpeakerInfo:
    """One speaker the recogniser knows: `source` "enrolled" (registry) or "training".

    >>> SpeakerInfo("ruth", "enrolled", 3).to_dict()["n_utterances"]
    3
    """

    name: str
    source: str
    n_utterances: int = 0
    created: float | None = None
    updated: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)
