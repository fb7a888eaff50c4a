"""Gradio demo in a real browser: each test serves a tiny test-made model on 127.0.0.1 (in a background thread, or
through ``run_gradio.py`` in a subprocess), drives the page in headless Chromium with Playwright (fills controls,
uploads files, presses Generate/Process), then downloads the returned audio and checks its length; Chromium itself
decodes it too. One test checks a screenshot is not blank; error cases (and the server's limits: too-long input audio,
a too-large upload) check the message shown in the page.

Needs Debian's ``chromium`` package (``/usr/bin/chromium``) and ``pip install playwright`` (``playwright install``
is not needed). Without them the tests skip with the reason.
"""
import io
import os

import numpy as np
import pytest
import soundfile as sf

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install -y chromium) to run the "
                "browser tests", allow_module_level=True)
pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[gradio]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from PIL import Image  # noqa: E402

from stable_audio_tools.interface.gradio import DemoLimits, create_ui, create_ui_for_model  # noqa: E402
from stable_audio_tools.models.factory import create_model_from_config  # noqa: E402

from test_gradio import (SAMPLE_SIZE, SR, autoencoder_config, cond_config, inpaint_config,  # noqa: E402
                         lm_available, lm_config, run_gradio_server, save_model, save_pretrained_dir, serve,
                         uncond_config, write_tone)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from tiny_t5 import make_tiny_t5

    root = tmp_path_factory.mktemp("gradio_browser")
    return {"root": root, "t5": make_tiny_t5(root / "tiny_t5")}


def open_page(browser, url):
    """A fresh page on ``url`` that may not reach anything else (no fonts or analytics from the internet).

    Uncaught JavaScript errors are collected in ``page.js_errors``; :func:`close` asserts there were none.
    """
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.js_errors = []
    page.on("pageerror", lambda error: page.js_errors.append(str(error)))
    page.set_default_timeout(TIMEOUT_MS)
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url) else route.abort())
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#generate-button, #process-button")
    return page


def close(page):
    errors = page.js_errors
    page.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def set_number(page, elem_id, value, attempts=5):
    """Type ``value`` into a slider's number box until the slider itself shows it (a box in a just-opened
    accordion may still be mounting when first typed into)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    check = "([id, v]) => Number(document.querySelector(`#${id} input[type=range]`).value) === v"
    for attempt in range(attempts):
        box.fill(str(value))
        box.press("Enter")
        try:
            page.wait_for_function(check, arg=[elem_id, float(value)], timeout=2000)
            return
        except sync_api.TimeoutError:
            if attempt == attempts - 1:
                raise


def open_accordion(page, label):
    page.get_by_text(label, exact=True).first.click()


def upload(page, elem_id, path):
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
    # the player (present, though hidden for undecodable files) replaces the drop zone once the upload is done
    page.wait_for_selector(f"#{elem_id} [data-testid=waveform-controls]", state="attached")


def output_href(page, previous=None):
    """Wait until the output audio links to a (new) file; return the URL."""
    link = "#output-audio a.download-link"
    page.wait_for_function(
        "([sel, prev]) => { const a = document.querySelector(sel); return a && a.href && a.href !== prev; }",
        arg=[link, previous or ""], timeout=TIMEOUT_MS)
    return page.get_attribute(link, "href")


def fetch_audio(page, href):
    response = page.request.get(href)
    assert response.ok, response.status
    return sf.read(io.BytesIO(response.body()))


def decoded_duration(page, href):
    """Duration in seconds of ``href`` as Chromium's Web Audio decoder sees it."""
    return page.evaluate("""async (href) => {
        const bytes = await (await fetch(href)).arrayBuffer();
        const buffer = await new OfflineAudioContext(1, 1, 44100).decodeAudioData(bytes);
        return buffer.duration;
    }""", href)


def error_toast(page, text):
    page.locator(".toast-body.error").filter(has_text=text).first.wait_for()


def test_text_to_audio(browser, workspace):
    config_path, ckpt_path = save_model(workspace["root"], "cond", cond_config(workspace["t5"]))
    ui = create_ui(model_config_path=config_path, ckpt_path=ckpt_path, gradio_title="Tiny text-to-audio")
    with serve(ui) as url:
        page = open_page(browser, url)
        page.click("#generate-button")  # no prompt yet: a message, and the server keeps serving
        error_toast(page, "Enter a prompt")

        # found by their accessible labels, as a screen reader announces them
        page.get_by_label("Prompt", exact=True).fill("solo piano melody")
        page.get_by_label("Negative prompt", exact=True).fill("drums")
        set_number(page, "steps", 3)
        set_number(page, "seconds-total", 0.5)
        open_accordion(page, "Output params")
        set_number(page, "preview-every", 2)
        page.check("#automatic-download input[type=checkbox]")
        with page.expect_download(timeout=20_000) as download:  # the "Auto Download" script saves the result
            page.click("#generate-button")
            href = output_href(page)
        assert download.value.suggested_filename == "output.wav"
        audio, sample_rate = fetch_audio(page, href)
        assert sample_rate == SR and audio.shape == (4000,) and np.abs(audio).max() > 0
        assert decoded_duration(page, href) == pytest.approx(0.5, abs=1e-3)
        # the final spectrogram and the previews of sampling steps 1 and 3
        page.wait_for_function("() => document.querySelectorAll('#output-spectrogram img').length === 3")

        image = np.asarray(Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("L"), dtype=np.float32)
        assert image.std() > 20 and (image < 100).mean() > 0.01, "the screenshot looks blank"

        bad = workspace["root"] / "not_audio.wav"
        bad.write_text("this is not audio")
        open_accordion(page, "Init audio")
        upload(page, "init-audio", bad)
        page.click("#generate-button")
        error_toast(page, "Init audio could not be read")
        close(page)


def test_inpainting_and_send_to_inpaint(browser, workspace):
    config_path, ckpt_path = save_model(workspace["root"], "inpaint", inpaint_config())
    with serve(create_ui(model_config_path=config_path, ckpt_path=ckpt_path)) as url:
        page = open_page(browser, url)
        set_number(page, "steps", 3)
        set_number(page, "seconds-total", 0.75)
        page.click("#generate-button")  # no inpaint audio yet: everything is generated
        href = output_href(page)
        audio, sample_rate = fetch_audio(page, href)
        assert sample_rate == SR and audio.shape == (6000,)

        open_accordion(page, "Inpainting")
        assert page.locator("#inpaint-audio [data-testid=waveform-controls]").count() == 0
        page.click("#send-to-inpaint")
        page.wait_for_selector("#inpaint-audio [data-testid=waveform-controls]", state="attached")
        set_number(page, "mask-start", 0.25)
        set_number(page, "mask-end", 0.5)
        page.click("#generate-button")
        second = output_href(page, previous=href)
        assert fetch_audio(page, second)[0].shape == (6000,)
        close(page)


def test_unconditional_through_run_gradio(browser, workspace):
    config_path, ckpt_path = save_model(workspace["root"], "uncond", uncond_config())
    args = ["--model-config", config_path, "--ckpt-path", ckpt_path, "--title", "Tiny unconditional"]
    # stopped like Ctrl+C at the end: Gradio shuts down and temporary files are removed
    with run_gradio_server(args, workspace["root"] / "run_gradio.log") as (_, url):
        page = open_page(browser, url)
        assert page.get_by_text("Tiny unconditional").count() >= 1
        set_number(page, "steps", 3)
        open_accordion(page, "Sampler params")
        page.fill("#seed textarea, #seed input", "123")
        page.click("#generate-button")
        href = output_href(page)
        audio, sample_rate = fetch_audio(page, href)
        assert sample_rate == SR and audio.shape == (SAMPLE_SIZE,)
        assert decoded_duration(page, href) == pytest.approx(SAMPLE_SIZE / SR, abs=1e-3)
        close(page)


def test_autoencoder_from_a_local_pretrained_directory(browser, workspace):
    directory = save_pretrained_dir(workspace["root"] / "tiny-ae", autoencoder_config())
    source = write_tone(workspace["root"] / "input_16k.wav", 0.3, 16000, channels=2)
    with serve(create_ui(pretrained_name=str(directory))) as url:
        page = open_page(browser, url)
        assert not page.locator("#n-quantizers").is_visible()  # only for DAC residual-VQ models
        upload(page, "input-audio", source)
        page.click("#process-button")
        href = output_href(page)
        audio, sample_rate = fetch_audio(page, href)
        assert sample_rate == SR and audio.shape == (2400,)  # 0.3 s resampled to the model's 8 kHz
        close(page)


@pytest.mark.skipif(not lm_available(), reason="stable_audio_tools.models.lm is not available")
def test_language_model(browser, workspace):
    config_path, ckpt_path = save_model(workspace["root"], "lm", lm_config())
    with serve(create_ui(model_config_path=config_path, ckpt_path=ckpt_path)) as url:
        page = open_page(browser, url)
        set_number(page, "seconds-total", 0.05)
        set_number(page, "top-k", 5)
        page.click("#generate-button")
        href = output_href(page)
        audio, sample_rate = fetch_audio(page, href)
        assert sample_rate == lm_config()["sample_rate"] and audio.shape == (int(0.05 * sample_rate),)
        close(page)


def test_limits_show_messages_in_the_page(browser, workspace):
    config = autoencoder_config()
    model = create_model_from_config(config).eval().requires_grad_(False)
    ui = create_ui_for_model(model, config, limits=DemoLimits(max_file_size="20kb", max_input_seconds=0.5))
    too_long = write_tone(workspace["root"] / "one_second.wav", 1.0, SR)  # 16 kB: uploads, but 1 s > 0.5 s
    too_big = write_tone(workspace["root"] / "two_seconds.wav", 2.0, SR)  # 32 kB > 20 kB
    with serve(ui) as url:
        page = open_page(browser, url)
        upload(page, "input-audio", too_long)
        page.click("#process-button")
        error_toast(page, "Input audio is 1.0 s long; this server accepts at most 0.5 s")
        page.locator("#input-audio button[aria-label='Clear']").first.click()
        page.locator("#input-audio input[type=file]").set_input_files(str(too_big))
        error_toast(page, "exceed the maximum allowed size of 20")
        close(page)
