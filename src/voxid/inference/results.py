"""What the recogniser answers: `Verification`, `Identification` (ranked `Candidate`s) and
`SpeakerInfo`, frozen values with a `to_dict` for JSON where the service sends them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple


class Candidate(NamedTuple):
    """One ranked answer of `identify`: unpacks as `(name, score)`.

    Attributes
    ----------
    name : str
        The speaker's name.
    score : float
        Its score for the recording (cosine, or AS-normed with a cohort).

    Examples
    --------
    >>> name, score = Candidate("ruth", 0.8)
    >>> name, score
    ('ruth', 0.8)
    """

    name: str
    score: float


@dataclass(frozen=True)
class Verification:
    """The answer of `verify`: `accepted` is `score >= threshold`.

    Attributes
    ----------
    name : str
        The speaker the recording was checked against.
    score : float
        The recording's score against that speaker (cosine, or AS-normed with a cohort).
    threshold : float
        The decision threshold the score was compared with.
    accepted : bool
        ``score >= threshold``.
    source : str
        ``"enrolled"`` (the registry's reference) or ``"training"`` (a training speaker's
        AAM class weight).
    std : float or None
        The spread of the score over MC-dropout samples (None when deterministic).

    Examples
    --------
    >>> v = Verification("ruth", 0.71, 0.5, True, "enrolled")
    >>> v.accepted, v.to_dict()["source"]
    (True, 'enrolled')
    """

    name: str
    score: float
    threshold: float
    accepted: bool
    source: str
    std: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON, one key per attribute.

        Returns
        -------
        dict
            ``name``, ``score``, ``threshold``, ``accepted``, ``source``, ``std``.

        Examples
        --------
        >>> Verification("ruth", 0.71, 0.5, True, "enrolled").to_dict()["score"]
        0.71
        """
        return asdict(self)


@dataclass(frozen=True)
class Identification:
    """The answer of `identify`: best match or "unknown", and the ranked candidates.

    Attributes
    ----------
    name : str
        The best candidate when its score reaches `threshold` (open set), else
        ``"unknown"``.
    score : float
        The best candidate's score.
    threshold : float
        The decision threshold.
    accepted : bool
        ``score >= threshold``.
    candidates : list of Candidate
        The top-k ``(name, score)`` pairs, best first, whatever the threshold.
    sources : dict of str to str
        Each candidate's source: ``"enrolled"``, ``"training"`` or ``"class"``.
    stds : dict of str to float
        MC-dropout spreads of the candidates' scores (empty when deterministic).

    Examples
    --------
    >>> answer = Identification("unknown", 0.3, 0.5, False, [Candidate("ruth", 0.3)])
    >>> answer.name, answer.candidates[0].name
    ('unknown', 'ruth')
    """

    name: str
    score: float
    threshold: float
    accepted: bool
    candidates: list[Candidate]
    sources: dict[str, str] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON.

        Returns
        -------
        dict
            ``name``, ``score``, ``threshold``, ``accepted`` and ``candidates``, a list of
            ``{name, score, source}`` (with ``std`` under MC dropout), best first.

        Examples
        --------
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
    """One speaker the recogniser knows (`Recognizer.speakers`).

    Attributes
    ----------
    name : str
        The speaker's name.
    source : str
        ``"enrolled"`` (in the registry) or ``"training"`` (a training speaker of the model).
    n_utterances : int
        Utterances enrolled (0 for training speakers).
    created, updated : float or None
        Enrolment times, seconds since the epoch (None for training speakers).
    metadata : dict
        What was stored with the enrolment.

    Examples
    --------
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
        """Plain dict for JSON, one key per attribute.

        Returns
        -------
        dict
            ``name``, ``source``, ``n_utterances``, ``created``, ``updated``, ``metadata``.

        Examples
        --------
        >>> SpeakerInfo("ruth", "training").to_dict()["source"]
        'training'
        """
        return asdict(self)
