"""The public API: `Recognizer.load(model).embed / enroll / verify / identify`.

One object wraps a model (torch checkpoint or self-describing ONNX file) and a speaker
registry. Audio of any length becomes one embedding the way the model was trained on it:
decode at the model's rate, drop silence with the training VAD, cut the speech into chunks
of the training length (half-overlapping), embed every chunk in one batch, and average the
L2-normalised chunk embeddings (renormalised). Scores are cosine similarities.

>>> from voxid import Recognizer            # doctest: +SKIP
>>> rec = Recognizer.load(registry="speakers.db")  # the shipped base model  # doctest: +SKIP
>>> rec.enroll("alice", ["a1.wav", "a2.wav"])  # doctest: +SKIP
>>> rec.verify("alice", "unknown.wav").accepted  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voxid.audio import AudioError
from voxid.diarization.pipeline import DiarizationConfig, centroid_namer, diarize
from voxid.diarization.rttm import Diarization
from voxid.errors import (
    ConfigError,
    ModelError,
    ModelMismatch,
    NoSpeakersEnrolled,
    NoSuchRegistry,
    RegistryError,
    UnknownSpeaker,
    VoxidWarning,
    require_positive,
)
from voxid.inference.backends import Backend, prepare_chunks
from voxid.inference.export import load_backend
from voxid.inference.index import SpeakerIndex
from voxid.inference.registry import (
    UNKNOWN,
    BaseRegistry,
    SpeakerRecord,
    is_url,
    mean_embedding,
    open_registry,
    policy_change,
    validate_name,
)
from voxid.inference.results import Candidate, Identification, SpeakerInfo, Verification
from voxid.inference.scoring import as_norm

#: Threshold on cosine scores when the model has no calibrated one (`voxid calibrate`).
DEFAULT_COSINE_THRESHOLD = 0.5
#: Threshold on AS-normed scores (a model with a cohort) when none is calibrated: about the
#: equal-error point of speakers the model never heard (BENCHMARKS.md, P-C); calibrate on
#: your own speakers.
DEFAULT_ASNORM_THRESHOLD = 2.9
#: Threshold on class probabilities for pure classifiers without a stored one.
DEFAULT_PROBABILITY_THRESHOLD = 0.5
#: Fewer training voices than this and enrolment warns: a model that has heard few voices
#: maps strangers close to the enrolled ones (confident false accepts in open-set use).
MIN_OPEN_SET_SPEAKERS = 100
NO_REGISTRY = "no registry: load the recogniser with registry=PATH"

AudioInput = str | os.PathLike[str] | bytes | np.ndarray


def _shipped(model: str | os.PathLike[str]) -> bool:
    from voxid.pretrained import is_shipped, resolve

    return is_shipped(resolve(model))


class Recognizer:
    """Embed, enrol, verify and identify speakers with one model and one registry.

    Build it with `Recognizer.load`. Deterministic unless `mc_samples > 0`, in which case
    verify/identify scores are means over that many Monte-Carlo-dropout passes, with their
    standard deviation (torch backend only; enrolment stays deterministic).

    Parameters
    ----------
    backend : Backend
        The model to embed with (`voxid.inference.export.load_backend`).
    registry : BaseRegistry, str, PathLike or None
        The enrolled speakers: a registry object, a SQLite path or a PostgreSQL URL
        (opened on first use), or None for a recogniser that only knows training speakers.
    threshold : float, optional
        Decision threshold overriding the one stored with the model.
    mc_samples : int
        MC-dropout passes for probabilistic scores (0: deterministic).
    require_registry : bool
        A registry file that does not exist is an error rather than nobody enrolled.

    Examples
    --------
    >>> rec = Recognizer.load(registry=None)  # the shipped base model
    >>> rec.sample_rate
    16000
    >>> rec.enroll("ruth", ["ruth1.wav", "ruth2.wav"])  # doctest: +SKIP
    >>> rec.verify("ruth", "test.wav").accepted           # doctest: +SKIP
    True
    """

    def __init__(
        self,
        backend: Backend,
        registry: BaseRegistry | str | os.PathLike[str] | None = None,
        *,
        threshold: float | None = None,
        mc_samples: int = 0,
        require_registry: bool = False,
    ) -> None:
        if not isinstance(mc_samples, int) or mc_samples < 0:
            raise ConfigError(f"mc_samples: must be a non-negative integer, got {mc_samples!r}")
        if mc_samples and not backend.supports_mc:
            raise ModelError(f"{backend.source}: mc_samples needs the torch backend (dropout)")
        self.backend = backend
        #: The model's card (labels, sample rate, threshold...), `backend.card`.
        self.card = backend.card
        self.mc_samples = mc_samples
        # A registry object is used as is; a path or URL is opened on first use.
        self._registry: BaseRegistry | None = None
        self._registry_arg: str | os.PathLike[str] | None = None
        if isinstance(registry, BaseRegistry):
            self._registry = registry
        else:
            self._registry_arg = registry
        # The enrolled centroids in memory, refreshed when the registry's change counter
        # moves: identify reads nothing from the database when nobody was enrolled since.
        self._index: SpeakerIndex | None = None
        self._index_lock = threading.Lock()
        self.require_registry = require_registry
        self.threshold = self._pick_threshold(threshold)
        self._warned_open_set = False

    @classmethod
    def load(
        cls,
        checkpoint_or_onnx: str | os.PathLike[str] | None = None,
        registry: BaseRegistry | str | os.PathLike[str] | None = "speakers.db",
        *,
        threshold: float | None = None,
        device: str = "cpu",
        mc_samples: int = 0,
        threads: int | None = None,
        require_registry: bool = False,
    ) -> Recognizer:
        """Load a run folder, `.ckpt`, `model.pt` or `.onnx` file and a registry.

        Parameters
        ----------
        checkpoint_or_onnx : str, PathLike or None
            The model (an `.onnx` file uses onnxruntime); None or ``"base"``: the base
            encoder shipped with voxid (`voxid.pretrained`).
        registry : BaseRegistry, str, PathLike or None
            SQLite file of enrolled speakers (opened on first use), a
            ``postgresql://user@host:port/db`` URL, a registry object, or None for a
            recogniser that only knows training speakers. Only `enroll` creates a missing
            file (or tables); reads treat it as nobody enrolled.
        threshold : float, optional
            Decision threshold overriding the calibrated one stored with the model.
        device : str
            Torch device (``"cpu"``, ``"cuda"``); ONNX uses CUDA when asked and available.
        mc_samples : int
            MC-dropout passes for probabilistic scores (0: deterministic).
        threads : int, optional
            onnxruntime intra-op threads per call (default: the cores); a server that runs
            several calls at once wants 1 (torch: `torch.set_num_threads`).
        require_registry : bool
            A registry file that does not exist is an error ("no such registry") for
            verify, identify, speakers and remove, instead of nobody enrolled (a mistyped
            path must not answer from the training speakers).

        Returns
        -------
        Recognizer
            Ready to embed; the registry is opened on first use.

        Examples
        --------
        >>> rec = Recognizer.load("base", registry=None)
        >>> rec.backend.kind
        'onnx'
        >>> Recognizer.load("runs/ecapa", registry="team.db")  # doctest: +SKIP
        """
        return cls(
            load_backend(checkpoint_or_onnx, device=device, threads=threads),
            registry,
            threshold=threshold,
            mc_samples=mc_samples,
            require_registry=require_registry,
        )

    # -- properties --------------------------------------------------------------------
    @property
    def model_fingerprint(self) -> str:
        """Short hash of the model weights; the registry refuses other models' embeddings."""
        return self.backend.fingerprint

    @property
    def chunk_policy(self) -> str:
        """How this model's audio becomes chunks (`ChunkPolicy.describe`): what the registry
        records beside the fingerprint."""
        return self.backend.policy.describe()

    @property
    def score_bounds(self) -> tuple[float, float]:
        """Where scores usually lie, for display: cosine scores in [-1, 1]; AS-normed ones
        (a model with a cohort) are cohort standard deviations, unbounded, and shown within
        4 of the threshold."""
        if self.backend.cohort is None:
            return -1.0, 1.0
        return self.threshold - 4.0, self.threshold + 4.0

    @property
    def open_set_warning(self) -> str | None:
        """Why enrolling strangers with this model is risky, or None: an embedding model
        (not shipped, not fine-tuned from a shipped one) trained on fewer than
        `MIN_OPEN_SET_SPEAKERS` voices. Speed-augmented copies (`name@aug`) are one voice."""
        if not self.backend.is_embedding_model or _shipped(self.backend.source):
            return None
        if self.card.init is not None and _shipped(self.card.init):
            return None
        heard = (self.card.base or {}).get("trained_speakers")
        if heard is None:
            names = self.card.train_speakers or self.card.labels
            heard = len({str(n).split("@")[0] for n in names})
        if not heard or heard >= MIN_OPEN_SET_SPEAKERS:
            return None  # 0: a model that does not say what it heard
        return (
            f"{self.backend.source}: trained on {heard} speakers only, so it may accept "
            f"strangers as enrolled speakers; for people it never heard use the shipped base "
            f"model (voxid models; -m base) or fine-tune it on yours (voxid train finetune)"
        )

    def warn_open_set(self) -> None:
        """Issue `open_set_warning` as a `VoxidWarning`, once per recogniser."""
        message = self.open_set_warning
        if message and not self._warned_open_set:
            self._warned_open_set = True
            warnings.warn(message, VoxidWarning, stacklevel=3)

    @property
    def meta(self) -> dict[str, Any]:
        """The card as its stored dict (a fresh copy; for scripts that index it by key)."""
        return self.card.to_dict()

    @property
    def sample_rate(self) -> int:
        """The rate audio is decoded at."""
        return self.backend.sample_rate

    @property
    def registry(self) -> BaseRegistry:
        """The speaker registry, created if missing (opened on first use, so `embed` alone
        creates no file); what `enroll` writes to."""
        if self._registry is None:
            if self._registry_arg is None:
                raise RegistryError(NO_REGISTRY)
            self._registry = open_registry(
                self._registry_arg, self.model_fingerprint, chunk_policy=self.chunk_policy
            )
        elif self._registry.model_fingerprint != self.model_fingerprint:
            raise ModelMismatch(
                f"{self._registry.label}: opened for model "
                f"{self._registry.model_fingerprint}, this model is "
                f"{self.model_fingerprint}"
            )
        elif self._registry.chunk_policy not in (None, self.chunk_policy):
            raise ModelMismatch(
                f"{self._registry.label}: opened for another chunk policy than this model's "
                f"({policy_change(self._registry.chunk_policy, self.chunk_policy)})"
            )
        return self._registry

    def _enrolled(self) -> BaseRegistry | None:
        """The registry to read from, never creating it: None without one, or when its file
        (or its PostgreSQL tables) does not exist yet (an error with `require_registry`)."""
        if self._registry is not None:
            return self.registry  # checks the model fingerprint
        if self._registry_arg is None:
            return None
        if is_url(self._registry_arg):
            try:
                self._registry = open_registry(
                    self._registry_arg,
                    self.model_fingerprint,
                    create=False,
                    chunk_policy=self.chunk_policy,
                )
            except NoSuchRegistry:
                if self.require_registry:
                    raise
                return None
            return self._registry
        path = Path(self._registry_arg)
        if not path.exists():
            if self.require_registry:
                raise NoSuchRegistry(f"{path}: no such registry")
            return None
        self._registry = open_registry(
            path, self.model_fingerprint, create=False, chunk_policy=self.chunk_policy
        )
        return self._registry

    def _synced_index(self) -> SpeakerIndex | None:
        """The in-memory index of the enrolled speakers, brought up to date with the
        registry (None without one)."""
        registry = self._enrolled()
        if registry is None:
            return None
        with self._index_lock:
            if self._index is None:
                self._index = SpeakerIndex(self.backend.cohort)
        self._index.sync(registry)
        return self._index

    def _pick_threshold(self, threshold: float | None) -> float:
        if threshold is not None:
            if not np.isfinite(threshold):
                raise ConfigError(f"threshold: must be a finite number, got {threshold!r}")
            return float(threshold)
        stored = self.card.scoring.threshold
        if stored is not None:
            return float(stored)
        if self.backend.cohort is not None:
            return DEFAULT_ASNORM_THRESHOLD
        if self.backend.is_embedding_model:
            return DEFAULT_COSINE_THRESHOLD
        return DEFAULT_PROBABILITY_THRESHOLD

    def _require_embeddings(self, what: str) -> None:
        if not self.backend.is_embedding_model:
            raise ModelError(
                f"{self.backend.source}: {self.card.model.name} is a pure classifier "
                f"without speaker embeddings; {what} needs an embedding model (crnn, ecapa, "
                f"resnet34); use identify() for its training speakers"
            )

    # -- embeddings --------------------------------------------------------------------
    def embed(self, audio: AudioInput, sr: int | None = None) -> np.ndarray:
        """One L2-normalised embedding of a recording: the mean of its chunks' embeddings.

        Parameters
        ----------
        audio : str, PathLike, bytes or numpy.ndarray
            A file, its encoded bytes, or samples at `sr`.
        sr : int, optional
            Sample rate of `audio` when it is an array.

        Returns
        -------
        numpy.ndarray
            Float32 ``(D,)``, unit length.

        Raises
        ------
        AudioError
            Unreadable audio, or less than about 0.5 s of speech.

        Examples
        --------
        >>> rec = Recognizer.load(registry=None)
        >>> rec.embed("ruth.wav").shape  # doctest: +SKIP
        (192,)
        """
        chunks = prepare_chunks(self.backend, audio, sr)
        return mean_embedding(self.backend.embed(chunks))

    def embed_many(
        self,
        paths: Sequence[AudioInput],
        batch_size: int = 64,
        *,
        progress: bool | None = None,
        errors: list[tuple[str, str]] | None = None,
    ) -> np.ndarray:
        """Embeddings of many files, chunks of several files batched together.

        Parameters
        ----------
        paths : sequence of str, PathLike or bytes
            Audio files (or their bytes).
        batch_size : int
            Chunks per forward pass.
        progress : bool, optional
            Show a rich progress bar (default: when stderr is a terminal).
        errors : list, optional
            When a list is given, unreadable files are appended as ``(path, message)`` and
            get a NaN row instead of raising.

        Returns
        -------
        numpy.ndarray
            ``(N, D)``, one row per path, in order.

        Examples
        --------
        >>> rec = Recognizer.load(registry=None)
        >>> problems = []
        >>> rec.embed_many(["a.wav", "b.wav"], errors=problems).shape  # doctest: +SKIP
        (2, 192)
        """
        from voxid.inference.backends import embed_batched

        return embed_batched(
            self.backend, list(paths), batch_size, progress=progress, errors=errors
        )

    def _samples(self, audio: AudioInput, sr: int | None) -> np.ndarray:
        """Query embeddings `(K, D)`: one deterministic row, or `mc_samples` MC-dropout rows."""
        chunks = prepare_chunks(self.backend, audio, sr)
        if not self.mc_samples:
            return mean_embedding(self.backend.embed(chunks))[None]
        return np.stack([mean_embedding(e) for e in self.backend.embed_mc(chunks, self.mc_samples)])

    # -- registry ----------------------------------------------------------------------
    def enroll(
        self,
        name: str,
        audios: AudioInput | Iterable[AudioInput],
        *,
        replace: bool = False,
        metadata: dict[str, Any] | None = None,
        sr: int | None = None,
    ) -> SpeakerRecord:
        """Enrol `name` from one or several utterances.

        Each utterance is embedded on its own and stored; the speaker's reference is the
        mean of the L2-normalised utterance embeddings, renormalised, so every utterance
        weighs the same whatever its length and the reference lies on the unit sphere the
        cosine scorer compares on. Enrolling a known name adds these utterances to the
        stored ones (the reference is recomputed from all); `replace=True` starts afresh.

        Parameters
        ----------
        name : str
            The speaker's name (letters, digits, spaces and ``_ . , ' ( ) @ + -``).
        audios : str, PathLike, bytes, numpy.ndarray, or an iterable of them
            One utterance or several.
        replace : bool
            Drop the speaker's earlier utterances.
        metadata : dict, optional
            Stored with the speaker (JSON types).
        sr : int, optional
            Sample rate of array inputs.

        Returns
        -------
        SpeakerRecord
            The stored record (name, utterance count, times, metadata).

        Examples
        --------
        >>> rec = Recognizer.load(registry="speakers.db")         # doctest: +SKIP
        >>> rec.enroll("ruth", ["ruth1.wav", "ruth2.wav"]).n_utterances  # doctest: +SKIP
        2
        """
        self._require_embeddings("enrol")
        name = validate_name(name)
        if isinstance(audios, (str, os.PathLike, bytes, np.ndarray)):
            audios = [audios]
        embs = [self.embed(a, sr) for a in audios]
        if not embs:
            raise ConfigError(f"enroll {name!r}: no audio given")
        record = self.registry.add(name, np.stack(embs), replace=replace, metadata=metadata)
        self.warn_open_set()  # after success: a failed enrolment stays a one-line error
        return record

    def remove(self, name: str) -> None:
        """Remove an enrolled speaker.

        Parameters
        ----------
        name : str
            The enrolled name.

        Raises
        ------
        UnknownSpeaker
            When `name` is not enrolled.

        Examples
        --------
        >>> Recognizer.load(registry=None).remove("ruth")
        Traceback (most recent call last):
        ...
        voxid.errors.RegistryError: no registry: load the recogniser with registry=PATH
        """
        registry = self._enrolled()
        if registry is None:
            if self._registry_arg is None:
                raise RegistryError(NO_REGISTRY)
            raise UnknownSpeaker(f"speaker {name!r}: not enrolled in {self._registry_arg}")
        registry.remove(name)

    def speakers(self, include_training: bool = False) -> list[SpeakerInfo]:
        """The speakers this recogniser can answer with.

        Parameters
        ----------
        include_training : bool
            Also list the training speakers not enrolled under the same name (those with
            an AAM class weight). A pure classifier's classes are always listed: they are
            all its `identify` answers.

        Returns
        -------
        list of SpeakerInfo
            Enrolled speakers first (by name), then training speakers.

        Examples
        --------
        >>> Recognizer.load(registry=None).speakers()  # the base model, no registry
        []
        """
        registry = self._enrolled()
        out = [
            SpeakerInfo(r.name, "enrolled", r.n_utterances, r.created, r.updated, r.metadata)
            for r in (registry.speakers() if registry is not None else [])
        ]
        enrolled = {s.name for s in out}
        if self.backend.is_embedding_model:
            listed = include_training and self.backend.has_class_bank
        else:
            listed = True
        return out + [
            SpeakerInfo(n, "training") for n in self.backend.labels if listed and n not in enrolled
        ]

    def n_speakers(self) -> int:
        """How many speakers `speakers()` lists, read from the in-memory index (nothing is
        read from the registry when it has not changed since the last call).

        Returns
        -------
        int
            The number of enrolled speakers (a pure classifier: its classes).

        Examples
        --------
        >>> Recognizer.load(registry=None).n_speakers()  # the base model, no registry
        0
        """
        if not self.backend.is_embedding_model:
            return len(self.speakers())
        index = self._synced_index()
        return len(index) if index is not None else 0

    def is_enrolled(self, name: str) -> bool:
        """Whether `speakers()` lists `name`, from the in-memory index like `n_speakers`.

        Parameters
        ----------
        name : str
            A speaker's name.

        Returns
        -------
        bool

        Examples
        --------
        >>> Recognizer.load(registry=None).is_enrolled("ruth")
        False
        """
        if not self.backend.is_embedding_model:
            return any(s.name == name for s in self.speakers())
        index = self._synced_index()
        return index is not None and name in index

    def _references(self, training: bool = True) -> tuple[list[str], np.ndarray, list[str]]:
        names: list[str] = []
        refs: list[np.ndarray] = []
        index = self._synced_index()
        if index is not None:
            for name in index.names():
                centroid = index.get(name)
                if centroid is not None:  # None: removed by another thread since names()
                    names.append(name)
                    refs.append(centroid)
        sources = ["enrolled"] * len(names)
        bank = self.backend.class_weights
        if training and self.backend.has_class_bank and bank is not None:
            known = set(names)
            for label, w in zip(self.backend.labels, bank, strict=True):
                if label not in known:
                    names.append(label)
                    refs.append(w)
                    sources.append("training")
        dim = self.backend.embedding_dim
        return names, np.stack(refs) if refs else np.zeros((0, dim), np.float32), sources

    def _score(self, samples: np.ndarray, refs: np.ndarray) -> np.ndarray:
        """Cosine scores `(K, N)` of embedding samples against references, AS-normed against
        the model's cohort when it carries one (`voxid fit-lda`)."""
        raw = samples @ refs.T
        cohort = self.backend.cohort
        return raw if cohort is None else as_norm(raw, samples, refs, cohort)

    # -- decisions ---------------------------------------------------------------------
    def verify(
        self,
        name: str,
        audio: AudioInput,
        sr: int | None = None,
        include_training: bool = False,
    ) -> Verification:
        """Is `audio` spoken by `name`? Scores it against the enrolled reference.

        Parameters
        ----------
        name : str
            An enrolled speaker (or, with `include_training`, a training speaker).
        audio : str, PathLike, bytes or numpy.ndarray
            The recording to check.
        sr : int, optional
            Sample rate of `audio` when it is an array.
        include_training : bool
            Score a speaker seen in training and not enrolled against its AAM class
            weight. Such scores run lower than the threshold calibrated on enrolments, so
            they are rejected more often: enrol the speaker to verify them reliably.

        Returns
        -------
        Verification
            Score, threshold, decision and source (and the MC-dropout spread).

        Raises
        ------
        UnknownSpeaker
            When `name` is neither enrolled nor (with `include_training`) a training speaker.

        Examples
        --------
        >>> rec = Recognizer.load(registry=None)
        >>> rec.verify("ruth", "test.wav")
        Traceback (most recent call last):
        ...
        voxid.errors.UnknownSpeaker: speaker 'ruth': not enrolled
        >>> Recognizer.load(registry="speakers.db").verify("ruth", "test.wav")  # doctest: +SKIP
        Verification(name='ruth', score=0.71, threshold=0.5, accepted=True, ...)
        """
        self._require_embeddings("verify")
        clean = str(name).strip()
        index = self._synced_index()
        source, ref = "enrolled", None
        if index is None or clean not in index:
            source, ref = "training", self._training_ref(clean) if include_training else None
            if ref is None:
                raise UnknownSpeaker(
                    f"speaker {clean!r}: {self._not_enrolled(clean, include_training)}"
                )
        samples = self._samples(audio, sr)
        if ref is None:
            assert index is not None  # ref is None only for an enrolled speaker
            scores = index.score(samples, clean)
            if scores is None:  # removed by another process since the check above
                raise UnknownSpeaker(f"speaker {clean!r}: {self._not_enrolled(clean, False)}")
        else:
            scores = self._score(samples, ref[None])[:, 0]
        score = float(scores.mean())
        return Verification(
            clean,
            score,
            self.threshold,
            score >= self.threshold,
            source,
            float(scores.std()) if self.mc_samples else None,
        )

    def _training_ref(self, name: str) -> np.ndarray | None:
        """The AAM class weight of training speaker `name`, or None."""
        bank = self.backend.class_weights
        if bank is None or not self.backend.has_class_bank or name not in self.backend.labels:
            return None
        return np.asarray(bank[list(self.backend.labels).index(name)])

    def _not_enrolled(self, name: str, include_training: bool) -> str:
        if include_training:
            return "not enrolled and not a training speaker"
        if self.backend.has_class_bank and name in self.backend.labels:
            return (
                "not enrolled (a training speaker: include_training=True / --include-training "
                "scores against its class weight)"
            )
        return "not enrolled"

    def identify(
        self,
        audio: AudioInput,
        top_k: int = 5,
        sr: int | None = None,
        include_training: bool = False,
    ) -> Identification:
        """Rank the enrolled speakers for `audio` by score (cosine, AS-normed with a
        cohort); "unknown" when none passes.

        The threshold is calibrated on embedding-to-enrolment scores, so only enrolled
        speakers compete by default: a training speaker's class weight scores on another,
        lower scale, so it would be "unknown" even when ranked first, and a stranger must
        not be matched to it. A pure classifier ranks its classes by softmax probability.

        Parameters
        ----------
        audio : str, PathLike, bytes or numpy.ndarray
            The recording.
        top_k : int
            Candidates returned.
        sr : int, optional
            Sample rate of `audio` when it is an array.
        include_training : bool
            Rank the training speakers (the AAM weight bank) too.

        Returns
        -------
        Identification
            The best name (or ``"unknown"``), its score and the ranked candidates.

        Raises
        ------
        NoSpeakersEnrolled
            When nobody is enrolled (and no training speaker is ranked).

        Examples
        --------
        >>> Recognizer.load(registry=None).identify("test.wav")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        voxid.errors.NoSpeakersEnrolled: identify: no enrolled speakers to compare with...
        >>> Recognizer.load(registry="speakers.db").identify("test.wav").name  # doctest: +SKIP
        'ruth'
        """
        require_positive("top_k", top_k, integer=True)
        if self.backend.is_embedding_model:
            return self._identify_enrolled(audio, top_k, sr, include_training)
        else:
            chunks = prepare_chunks(self.backend, audio, sr)
            k = self.mc_samples
            probs = (
                [self.backend.classify(chunks)] if not k else self.backend.classify_mc(chunks, k)
            )
            scores = np.stack([p.mean(axis=0) for p in probs])
            names, sources = list(self.backend.labels), ["class"] * len(self.backend.labels)
        mean, std = scores.mean(axis=0), scores.std(axis=0)
        order = np.argsort(-mean, kind="stable")[:top_k]
        return self._decide([(names[i], float(mean[i]), sources[i], float(std[i])) for i in order])

    def _decide(self, ranked: list[tuple[str, float, str, float]]) -> Identification:
        """The answer for candidates `(name, score, source, std)`, best first: the best
        name when it passes the threshold, else "unknown"."""
        cands = [Candidate(name, score) for name, score, _, _ in ranked]
        best = cands[0]
        accepted = best.score >= self.threshold
        return Identification(
            best.name if accepted else UNKNOWN,
            best.score,
            self.threshold,
            accepted,
            cands,
            {name: source for name, _, source, _ in ranked},
            {name: std for name, _, _, std in ranked} if self.mc_samples else {},
        )

    def _identify_enrolled(
        self, audio: AudioInput, top_k: int, sr: int | None, include_training: bool
    ) -> Identification:
        """`identify` for an embedding model: the index's best enrolled speakers (exact
        scores; the full ranking up to `EXACT_LIMIT` speakers) merged with the training
        speakers, ranked as one stable sort of [enrolled by name, training in label order]."""
        index = self._synced_index()
        n_enrolled = len(index) if index is not None else 0
        training: list[tuple[int, str, np.ndarray]] = []
        labels, weights = self.backend.labels, self.backend.class_weights
        if include_training and self.backend.has_class_bank and weights is not None:
            training = [
                (i, label, w)
                for i, (label, w) in enumerate(zip(labels, weights, strict=True))
                if index is None or label not in index
            ]
        if not n_enrolled and not training:
            # Enrolling is the way for every caller (the service has no include_training).
            hint = ": enrol someone first" + (
                " (or include_training=True / --include-training ranks the model's training "
                "speakers)"
                if self.backend.has_class_bank and not include_training
                else ""
            )
            raise NoSpeakersEnrolled("identify: no enrolled speakers to compare with" + hint)
        samples = self._samples(audio, sr)
        # (score, group, tie-break, name, std, source): sorting these gives the order of
        # today's stable argsort over enrolled (by name) then training speakers.
        ranked: list[tuple[float, int, Any, str, float, str]] = []
        if index is not None and n_enrolled:
            ranked += [(m, 0, n, n, sd, "enrolled") for n, m, sd in index.top(samples, top_k)]
        if training:
            scores = self._score(samples, np.stack([w for _, _, w in training]))
            mean, std = scores.mean(axis=0), scores.std(axis=0)
            ranked += [
                (float(mean[j]), 1, i, label, float(std[j]), "training")
                for j, (i, label, _) in enumerate(training)
            ]
        ranked.sort(key=lambda c: (-c[0], c[1], c[2]))
        return self._decide([(c[3], c[0], c[5], c[4]) for c in ranked[:top_k]])

    # -- who spoke when ----------------------------------------------------------------
    def diarize(
        self,
        audio: AudioInput,
        num_speakers: int | None = None,
        max_speakers: int | None = None,
        *,
        sr: int | None = None,
        config: DiarizationConfig | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> Diarization:
        """Who spoke when in `audio` (a path, encoded bytes, or samples at `sr`).

        Parameters
        ----------
        audio : str, PathLike, bytes or numpy.ndarray
            The recording; a long file streams through in blocks (bounded memory).
        num_speakers : int, optional
            The known number of speakers; otherwise it is estimated.
        max_speakers : int, optional
            The most speakers to find when estimating (default: the config's).
        sr : int, optional
            Sample rate of `audio` when it is an array.
        config : DiarizationConfig, optional
            Windows, clustering and smoothing (`voxid.diarization.DiarizationConfig`).
        on_progress : callable, optional
            Called with the seconds of audio processed after each block.

        Returns
        -------
        Diarization
            Typed segments (`to_dict()`, `to_rttm()`): a speaker whose voice matches
            someone enrolled (scored as `identify` scores, against this recogniser's
            threshold) gets that name; the others are SPEAKER_00, SPEAKER_01, ...

        Examples
        --------
        >>> rec = Recognizer.load(registry="speakers.db")            # doctest: +SKIP
        >>> rec.diarize("meeting.wav", max_speakers=4).num_speakers  # doctest: +SKIP
        2
        """
        self._require_embeddings("diarize")
        names, refs, _ = self._references(training=False)
        return diarize(
            self.backend,
            audio,
            sr=sr,
            config=config,
            num_speakers=num_speakers,
            max_speakers=max_speakers,
            namer=centroid_namer(names, refs, self._score, self.threshold),
            threshold=float(self.threshold) if names else None,
            on_progress=on_progress,
        )

    def __repr__(self) -> str:
        return (
            f"Recognizer({self.backend.source}, backend={self.backend.kind}, "
            f"threshold={self.threshold:.3f})"
        )


__all__ = ["AudioError", "Candidate", "Identification", "Recognizer", "SpeakerInfo", "Verification"]
