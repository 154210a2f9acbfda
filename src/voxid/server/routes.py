"""HTTP endpoints: enrol, verify, identify, list and delete speakers, health."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, Header, Path, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from voxid.errors import ConfigError, RegistryError
from voxid.inference.registry import RESERVED_NAMES
from voxid.server.service import Service
from voxid.stream import SILENCE, model_sample_rate

router = APIRouter()

#: Labels the live stream answers with; never a speaker's name.
_RESERVED = RESERVED_NAMES | {SILENCE}
#: Uploads with less speech than this (VAD fraction) are refused: nothing to learn from.
MIN_SPEECH_RATIO = 0.05
MAX_FILES = 20


def validate_name(name: str) -> str:
    """Return the NFC-normalised, stripped speaker name, or raise ConfigError (422).

    The registry's rule, plus the labels the live stream uses.

    >>> validate_name(" Zoë ")
    'Zoë'
    >>> validate_name("silence")
    Traceback (most recent call last):
    ...
    voxid.errors.ConfigError: name: 'silence' is reserved (the live stream's label for no speech)
    """
    from voxid.inference.registry import validate_name as registry_rule

    try:
        clean = registry_rule(unicodedata.normalize("NFC", name))
    except RegistryError as exc:
        raise ConfigError(f"name: {exc}") from None
    if clean.lower() in _RESERVED:
        raise ConfigError(f"name: {clean!r} is reserved (the live stream's label for no speech)")
    return clean


def _rate(service: Service) -> int:
    return model_sample_rate(service.recognizer)


def _service(request: Request) -> Service:
    return request.app.state.service


async def _decode(service: Service, upload: UploadFile) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode one upload from memory at the model's rate, at most `workers` at a time;
    return it with its statistics."""
    from voxid.audio import load_audio
    from voxid.inference.backends import MIN_SPEECH_SECONDS, NotEnoughSpeech
    from voxid.stream import speech_stats, vad_policy

    sr = model_sample_rate(service.recognizer)
    label = _display_name(upload.filename)
    vad = vad_policy(service.recognizer)

    def work() -> tuple[np.ndarray, dict[str, Any]]:
        wav = load_audio(data, sr=sr, max_seconds=service.max_audio_seconds, name=label)
        # The model's own VAD policy (Silero and a level floor by default), checked here
        # where the upload still has its name: the recogniser only sees an array.
        ratio, rms_db = speech_stats(wav, sr, vad)
        if ratio < MIN_SPEECH_RATIO:
            raise NotEnoughSpeech(
                f"{label}: no speech found (speech ratio {ratio:.0%}, level {rms_db:.0f} dBFS)"
            )
        if ratio * wav.size < MIN_SPEECH_SECONDS * sr:
            raise NotEnoughSpeech(
                f"{label}: only {ratio * wav.size / sr:.2f} s of speech after silence "
                f"removal, need at least {MIN_SPEECH_SECONDS} s"
            )
        return wav, {
            "filename": label,
            "duration_s": round(wav.size / sr, 3),
            "speech_ratio": round(ratio, 3),
            "rms_db": round(rms_db, 1),
        }

    # The bytes are read inside the slot too: waiting uploads stay spooled on disk.
    async with service.decode_slots:
        data = await upload.read()
        return await run_in_threadpool(work)


def _display_name(filename: str | None) -> str:
    # The client's file name is only ever echoed in messages, never used as a path.
    base = re.split(r"[\\/]", filename or "")[-1]
    return "".join(ch for ch in base if ch.isprintable())[:80] or "upload"


def _speaker_list(recognizer: Any) -> list[dict[str, Any]]:
    """Enrolled speakers. A model's training speakers are left out: their class weights
    score on another scale than the calibrated threshold, so they would always be refused
    (a pure classifier's classes stay: they are all it answers)."""
    return [
        {
            "name": str(s.name),
            "source": str(getattr(s, "source", "enrolled")),
            "n_utterances": int(getattr(s, "n_utterances", 0)),
        }
        for s in recognizer.speakers()
    ]


def _speaker_names(recognizer: Any) -> list[str]:
    return [s["name"] for s in _speaker_list(recognizer)]


@router.get("/health", summary="Liveness and model facts")
async def health(request: Request) -> dict[str, Any]:
    """Status, model facts and the number of enrolled speakers."""
    service = _service(request)
    # From the recogniser's in-memory index: a request must not read every row of a
    # registry of 100,000 voices.
    count = await service.read(service.recognizer.n_speakers)
    rec = service.recognizer
    return {
        "status": "ok",
        "speakers": count,
        "sample_rate": model_sample_rate(rec),
        "model": str(getattr(rec, "meta", {}).get("model_name", "?")),
        "backend": str(getattr(getattr(rec, "backend", None), "kind", "?")),
        "threshold": getattr(rec, "threshold", None),
        "max_upload_mb": service.max_upload_bytes / 1e6,
        "mutations": service.api_key is not None,
    }


@router.get("/speakers", summary="Enrolled speakers")
async def speakers(request: Request) -> dict[str, Any]:
    """Names of the enrolled speakers, sorted."""
    service = _service(request)
    return {"speakers": await service.read(_speaker_list, service.recognizer)}


@router.delete("/speakers/{name}", summary="Remove a speaker (needs X-API-Key)")
async def delete_speaker(
    request: Request,
    name: Annotated[str, Path(max_length=200)],
    x_api_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Remove an enrolled speaker and all their embeddings."""
    service = _service(request)
    service.check_key(x_api_key)
    name = validate_name(name)
    # Nobody of that name: the recogniser raises UnknownSpeaker (404); no separate check.
    await service.run(service.recognizer.remove, name)
    return {"removed": name, "speakers": await service.read(_speaker_names, service.recognizer)}


@router.post("/enroll", summary="Enrol a speaker from one or more recordings (needs X-API-Key)")
async def enroll(
    request: Request,
    name: Annotated[str, Form(max_length=200)],
    files: Annotated[list[UploadFile], File(description="audio files")],
    x_api_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Enrol `name` (new, or adding recordings to an existing speaker)."""
    service = _service(request)
    service.check_key(x_api_key)
    name = validate_name(name)
    if not 1 <= len(files) <= MAX_FILES:
        raise ConfigError(f"files: give between 1 and {MAX_FILES} audio files, got {len(files)}")
    decoded = [await _decode(service, f) for f in files]
    # One call, one registry transaction: a crash leaves this enrolment all or nothing.
    await service.run(
        service.recognizer.enroll, name, [wav for wav, _ in decoded], sr=_rate(service)
    )
    return {
        "name": name,
        "enrolled": len(decoded),
        "audio": [s for _, s in decoded],
        "speakers": await service.read(_speaker_names, service.recognizer),
    }


@router.post("/verify", summary="Is this recording the claimed speaker?")
async def verify(
    request: Request,
    name: Annotated[str, Form(max_length=200)],
    file: Annotated[UploadFile, File(description="audio file")],
) -> dict[str, Any]:
    """Score a recording against one enrolled speaker and accept or reject it."""
    service = _service(request)
    name = validate_name(name)
    wav, stats = await _decode(service, file)
    # An unknown name is the recogniser's UnknownSpeaker (404), raised before any model
    # work; the answer is `Verification.to_dict()`, as `voxid verify --json` prints it.
    result = await service.run(service.recognizer.verify, name, wav, sr=_rate(service))
    return {**result.to_dict(), "audio": stats}


@router.post("/identify", summary="Who among the enrolled speakers is this?")
async def identify(
    request: Request,
    file: Annotated[UploadFile, File(description="audio file")],
    top_k: Annotated[int, Query(ge=1, le=50)] = 5,
) -> dict[str, Any]:
    """Rank the enrolled speakers for a recording; "unknown" when none passes the threshold."""
    service = _service(request)
    wav, stats = await _decode(service, file)
    # Nobody enrolled is the recogniser's NoSpeakersEnrolled (409), raised before any model
    # work; the answer is `Identification.to_dict()`, as `voxid identify --json` prints it.
    result = await service.run(service.recognizer.identify, wav, top_k=top_k, sr=_rate(service))
    return {**result.to_dict(), "audio": stats}
