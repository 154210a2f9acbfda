"""The web page in a real headless Chromium with a fake microphone playing real speech."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxid.inference.recognizer import Recognizer
from voxid.server import create_app
from voxid.server.background import BackgroundServer

CHROMIUM = Path("/usr/bin/chromium")
KEY = "web-test-key"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed"),
]
BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory) -> Path:
    """Eight sentences of a voice the model never trained on (Chromium loops the file)."""
    from voxid.audio import load_audio
    from voxid.demo import synthesize_corpus

    root = tmp_path_factory.mktemp("mic")
    synthesize_corpus(root, n_speakers=5, n_sentences=8, offset=40)
    gap = np.zeros(4000, np.float32)
    parts = [x for f in sorted((root / "elena").glob("*.wav")) for x in (load_audio(f), gap)]
    path = root / "microphone.wav"
    sf.write(path, np.concatenate(parts), 16000, subtype="PCM_16")
    return path


@pytest.fixture
def server(trained_model, tmp_path):
    """The service with the crnn trained on alice..david; the page enrols elena."""
    rec = Recognizer.load(trained_model, registry=tmp_path / "speakers.db")
    with BackgroundServer(create_app(rec, api_key=KEY)) as srv:
        yield srv


def _browser(playwright, *extra: str):
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=[*BASE_ARGS, *extra]
    )


def _wait_recorded(page, seconds: float, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = page.text_content("#clip-info") or ""
        match = re.search(r"Recording… ([0-9.]+) s", text)
        if match and float(match.group(1)) >= seconds:
            return
        time.sleep(0.2)
    raise AssertionError(f"recording did not reach {seconds} s: {text!r}")


@pytest.mark.slow
def test_enrol_from_microphone_then_identify_live(server, microphone_wav, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = _browser(
            p,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone_wav}",
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url)
        page.wait_for_selector("#health:not(:has-text('connecting'))")
        page.fill("#api-key", KEY)
        page.fill("#name", "Elena")

        page.click("#record")
        _wait_recorded(page, seconds=6.0)
        page.click("#record")
        # Stopping finishes asynchronously (the recorder flushes its last buffer first).
        sync_api.expect(page.locator("#clip-info")).to_have_text(
            re.compile(r"^Recorded"), timeout=10_000
        )
        with page.expect_response(lambda r: r.url.endswith("/enroll")) as info:
            page.click("#enrol")
        response = info.value
        assert response.status == 200, response.text()
        audio = response.json()["audio"][0]
        # Chromium feeds silence without any error when it cannot read the file: make
        # sure the page really captured, resampled and uploaded the speech.
        assert audio["duration_s"] >= 5.5 and audio["speech_ratio"] > 0.5, audio
        assert audio["rms_db"] > -40, audio
        page.wait_for_selector("#speakers li:has-text('Elena')")

        page.click("#live")
        # Locator waits, not wait_for_function: the page's CSP forbids evaluating strings.
        sync_api.expect(page.locator("#live-label")).to_have_text("Elena", timeout=30_000)
        width = page.evaluate("getComputedStyle(document.getElementById('live-bar')).width")
        assert float(width.removesuffix("px")) > 0
        assert "latency" in page.text_content("#live-info")
        shot = tmp_path / "voxid-live.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        page.click("#live")
        page.wait_for_selector("#live:has-text('Start live')")
        assert not errors, errors
        browser.close()


def test_phone_layout_and_denied_microphone(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        # A (fake) microphone exists, but without the fake UI nobody grants permission.
        browser = _browser(p, "--use-fake-device-for-media-stream")
        page = browser.new_page(
            viewport={"width": 390, "height": 844},
            is_mobile=True,
            has_touch=True,
            device_scale_factor=2,
        )
        page.goto(server.url)
        page.wait_for_selector("#health:not(:has-text('connecting'))")
        # Nothing wider than the phone screen.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.click("#record")
        page.wait_for_selector("#message:not([hidden])")
        assert "Microphone access was denied" in page.text_content("#message")
        # Enrolling with no recording and no key gives a message, not a request.
        page.fill("#name", "Zoe")
        page.click("#enrol")
        assert "Record something" in page.text_content("#message")
        page.screenshot(path=str(tmp_path / "voxid-phone.png"), full_page=True)
        browser.close()


def test_result_cleared_on_error_chips_folded_threshold_marked(server, tmp_path):
    """Against faked answers: score bars mark the threshold, an error leaves no stale
    result behind, and names that differ only in case make one chip."""
    import json

    sync_api = pytest.importorskip("playwright.sync_api")
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    speakers = {"speakers": [
        {"name": "wisleyv", "source": "trained", "n_utterances": 0},
        {"name": "Wisleyv", "source": "enrolled", "n_utterances": 3},
        {"name": "alice", "source": "trained", "n_utterances": 0},
    ]}  # fmt: skip
    identified = {"name": "alice", "score": 0.8, "threshold": 0.5, "accepted": True, "audio": {},
        "candidates": [{"name": "alice", "score": 0.8, "source": "enrolled"},
                       {"name": "bruno", "score": 0.2, "source": "enrolled"}]}  # fmt: skip
    answers = [(200, identified), (422, {"detail": "no speech in this recording"})]

    def identify(route):
        status, body = answers.pop(0)
        route.fulfill(status=status, content_type="application/json", body=json.dumps(body))

    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page()
        page.route("**/speakers", lambda r: r.fulfill(json=speakers))
        page.route("**/identify?*", identify)
        page.goto(server.url)
        page.wait_for_selector("#speakers li:has-text('alice')")
        chips = page.locator("#speakers li").all_text_contents()
        assert [c.strip("✕ ") for c in chips] == ["Wisleyv (3, trained)", "alice (trained)"]

        page.set_input_files("#file", str(clip))
        page.click("#identify")
        page.wait_for_selector("#result .candidates")
        marks = page.locator("#result .candidates .mini .threshold")
        sync_api.expect(marks).to_have_count(2)
        assert marks.first.get_attribute("title") == "threshold 0.50"
        bar, mark = page.locator("#result .mini").first, marks.first
        box, at = bar.bounding_box(), mark.bounding_box()
        assert abs(at["x"] - (box["x"] + box["width"] / 2)) < 2  # mid-bar, as scores are scaled

        page.click("#identify")
        sync_api.expect(page.locator("#message")).to_have_text("no speech in this recording")
        sync_api.expect(page.locator("#result")).to_be_empty()
        browser.close()
