"""What the routes share: `Service`, the recogniser with its inference workers and the
settings. Its own module, so that the routes (imported by `app.create_app`) need not import
`app` back."""

from __future__ import annotations

import asyncio
import hmac
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from voxid.errors import require_positive


class Service:
    """What the routes share: the recognizer, its inference workers and the settings.

    `workers` model calls run at once, each on its own thread. On a CPU, requests in
    parallel on one thread each serve more than one request at a time on every core: a
    call split over cores waits at each layer for its slowest thread, and under load (other
    requests decoding, other processes) that thread is often descheduled (figures:
    BENCHMARKS.md, service notes).
    """

    def __init__(
        self,
        recognizer: Any,
        api_key: str | None,
        max_upload_bytes: int,
        max_audio_seconds: float,
        allowed_origins: set[str] | None = None,
        workers: int = 1,
    ) -> None:
        require_positive("workers", workers, integer=True)
        if getattr(recognizer, "mc_samples", 0):
            workers = 1  # MC dropout switches the torch model's dropout on and off per call
        self.recognizer = recognizer
        self.workers = workers
        self.allowed_origins = allowed_origins or set()
        self.live_sessions = 0  # only touched on the event loop: no lock needed
        self.api_key = api_key or None
        self.max_upload_bytes = max_upload_bytes
        self.max_audio_seconds = max_audio_seconds
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voxid-infer")
        # Decodes run in the shared threadpool (40 threads): without a bound, a burst of
        # uploads decodes all at once, each holding its bytes and its output in memory.
        self.decode_slots = asyncio.Semaphore(workers)

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking call into the recognizer on one of its inference workers."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(fn, *args, **kwargs))

    async def read(self, fn: Any, *args: Any) -> Any:
        """Run a registry read in the shared threadpool: it needs no model, so it must not
        queue behind inference (the registry keeps one SQLite connection per thread)."""
        return await run_in_threadpool(fn, *args)

    def check_key(self, given: str | None) -> None:
        """Raise 401 unless `given` is the configured API key (constant-time compare)."""
        if self.api_key is None:
            raise StarletteHTTPException(
                401,
                "mutations are disabled: the server has no API key configured "
                "(start it with --api-key or VOXID_API_KEY)",
            )
        if not given or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise StarletteHTTPException(401, "missing or wrong X-API-Key header")
