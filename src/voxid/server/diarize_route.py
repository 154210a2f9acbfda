"""`POST /diarize`: who spoke when in an uploaded recording, named from the registry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile

from voxid.errors import ConfigError
from voxid.server.routes import _decode, _rate, _service

router = APIRouter()


@router.post("/diarize", summary="Who spoke when in this recording?")
async def diarize(
    request: Request,
    file: Annotated[UploadFile, File(description="audio file")],
    num_speakers: Annotated[int | None, Query(ge=1, le=20)] = None,
    max_speakers: Annotated[int | None, Query(ge=1, le=20)] = None,
) -> dict[str, Any]:
    """Speaker turns of a recording (the upload and duration limits of `/identify`):
    enrolled speakers by name (the model's threshold), the others SPEAKER_00, ...
    Overlapped speech is given to the dominant speaker."""
    service = _service(request)
    if num_speakers is not None and max_speakers is not None:
        raise ConfigError("num_speakers and max_speakers: give one or the other, not both")
    wav, stats = await _decode(service, file)
    result = await service.run(
        service.recognizer.diarize,
        wav,
        num_speakers=num_speakers,
        max_speakers=max_speakers,
        sr=_rate(service),
    )
    return {**result.to_dict(), "audio": stats}
