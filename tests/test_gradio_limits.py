"""The demo cannot be tied up: every limit checked through the HTTP API of a launched server (gradio_client and raw
HTTP against 127.0.0.1), plus the flags of ``run_gradio.py`` in a subprocess and the handlers of the model types
that the HTTP tests do not serve.

Requests that must be stopped ask for a million sampling steps of a tiny model (hours of work): they can only end
early through the time limit or cancellation. That a stopped request really stopped is shown by the next request
being served: requests run one at a time, and a request keeps its slot until it has stopped.
"""
import json
import logging
import os
import signal
import time

import numpy as np
import pytest
import torch

gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[gradio]')")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is not installed (comes with gradio)")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (comes with gradio)")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import QueueError, Status  # noqa: E402

from stable_audio_tools.interface import gradio as demo  # noqa: E402
from stable_audio_tools.interface.interfaces import common  # noqa: E402
from stable_audio_tools.interface.interfaces.autoencoder import AutoencoderInterface  # noqa: E402
from stable_audio_tools.interface.interfaces.diffusion_cond import DiffusionCondInterface  # noqa: E402
from stable_audio_tools.interface.interfaces.limits import DemoLimits, parse_file_size  # noqa: E402
from stable_audio_tools.models.factory import create_model_from_config  # noqa: E402

from test_gradio import (SR, _load_run_gradio, autoencoder_config, frames, inpaint_config,  # noqa: E402
                         lm_available, lm_config, run_gradio_server, save_model, serve, uncond_config, write_tone)

ENDLESS = 10 ** 6  # sampling steps no test waits for
RESULT_TIMEOUT = 120  # seconds; only reached when a request that should have stopped keeps running


def tiny(config, seed=0):
    torch.manual_seed(seed)
    return create_model_from_config(config).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def uncond_model():
    return tiny(uncond_config())


def connect(url, tmp_path):
    """A gradio_client for ``url`` that downloads results into the test's directory."""
    return Client(url, verbose=False, download_files=str(tmp_path / "downloads"), analytics_enabled=False)


def page_config(url):
    return httpx.get(f"{url}/config", timeout=30).json()


def slider_maximum(url, label):
    return next(c["props"]["maximum"] for c in page_config(url)["components"]
                if c.get("props", {}).get("label") == label)


def wait_until_running(job):
    """Poll until the server has started ``job``."""
    while job.status().code not in (Status.PROCESSING, Status.PROGRESS):
        assert not job.done(), "the job ended before it ran"
        time.sleep(0.05)


# ----------------------------------------------------------------------------------------------- settings
def test_limits_are_validated_with_the_flag_named():
    limits = DemoLimits()
    assert (limits.max_file_size_bytes, limits.max_input_seconds, limits.max_steps, limits.max_seconds,
            limits.time_limit, limits.queue_size, limits.concurrency) == (50 * 1024 ** 2, 300, 500, None, 600, 16, 1)
    assert parse_file_size("800kb") == 800 * 1024 and parse_file_size("1.5 GB") == int(1.5 * 1024 ** 3)
    assert parse_file_size("123") == 123 and parse_file_size("none") is None
    for kwargs, message in ((dict(max_steps=0), "--max-steps"), (dict(max_file_size="12xb"), "not a file size"),
                            (dict(time_limit=float("nan")), "--request-time-limit"),
                            (dict(concurrency=0), "--concurrency"), (dict(max_input_seconds=-1), "--max-input")):
        with pytest.raises(ValueError, match=message):
            DemoLimits(**kwargs)
    assert DemoLimits(delete_files_after=7200).delete_cache() == (600, 7200)


def test_run_gradio_flags_and_help(capsys):
    run_gradio = _load_run_gradio()
    with pytest.raises(SystemExit) as exit_info:
        run_gradio.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--max-file-size", "--max-input-seconds", "--max-steps", "--max-seconds", "--request-time-limit",
                 "--queue-size", "--concurrency", "--delete-files-after"):
        assert flag in help_text
    parser = run_gradio.build_parser()
    args = parser.parse_args(["--pretrained-name", "x", "--max-input-seconds", "0", "--request-time-limit", "0"])
    limits = run_gradio._limits(parser, args)
    assert limits.max_input_seconds is None and limits.time_limit is None  # 0: no limit
    for argv, message in ((["--max-steps", "0"], "--max-steps"), (["--max-file-size", "lots"], "not a file size"),
                          (["--request-time-limit", "-5"], "--request-time-limit"),
                          (["--queue-size", "0"], "--queue-size")):
        with pytest.raises(SystemExit):
            run_gradio.main(["--pretrained-name", "x", *argv])
        assert message in capsys.readouterr().err


def test_run_gradio_restores_the_sigterm_handler(tmp_path):
    run_gradio = _load_run_gradio()
    config_path, _ = save_model(tmp_path, "ae", autoencoder_config())
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:  # fails while loading, after the handler was installed
        run_gradio.main(["--model-config", str(config_path), "--ckpt-path", str(tmp_path / "missing.safetensors")])
    assert "missing.safetensors" in str(exit_info.value.code)
    assert signal.getsignal(signal.SIGTERM) is before


# ----------------------------------------------------------------------------------------------- HTTP API
def test_requests_above_the_limits_are_refused_with_a_message(tmp_path):
    config = inpaint_config()
    limits = DemoLimits(max_steps=4, max_seconds=0.5, max_input_seconds=0.5)
    model = tiny(config)
    interface = DiffusionCondInterface(model, config, limits=limits, writer=common.OutputWriter(tmp_path / "out"))
    # the handler's own checks (what a Gradio without slider bound checks relies on)
    with pytest.raises(gr.Error, match=r"Steps \(5\) is above this server's limit of 4 \(--max-steps\)"):
        interface.generate("", steps=5, progress=None)
    with pytest.raises(gr.Error, match=r"Seconds total \(0.75 s\) is above this server's limit of 0.5 s"):
        interface.generate("", steps=2, seconds_total=0.75, progress=None)
    ui = demo.create_ui_for_model(model, config, limits=limits)
    long_audio = handle_file(write_tone(tmp_path / "long.wav", 1.0, SR))
    short_audio = handle_file(write_tone(tmp_path / "short.wav", 0.25, SR))
    with serve(ui) as url:
        assert slider_maximum(url, "Steps") == 4 and slider_maximum(url, "Seconds total") == 0.5
        client = connect(url, tmp_path)
        # Gradio 6 checks slider values against the slider's bounds before the handler's own check runs
        cases = [(dict(steps=5), r"Steps \(5\) is above this server's limit of 4 \(--max-steps\)|"
                                 r"Value 5 is greater than maximum value 4"),
                 (dict(seconds_total=0.75), r"above this server's limit of 0.5 s \(--max-seconds\)|"
                                            r"Value 0.75 is greater than maximum value 0.5"),
                 (dict(init_audio=long_audio), r"Init audio is 1.0 s long; this server accepts at most 0.5 s"),
                 (dict(inpaint_audio=long_audio), r"Inpaint audio is 1.0 s long.*--max-input-seconds")]
        for kwargs, message in cases:
            request = {"prompt": "", "steps": 2, "seconds_total": 0.5, **kwargs}
            with pytest.raises(AppError, match=message):
                client.predict(api_name="/generate", **request)
        path, _ = client.predict(prompt="", steps=2, seconds_total=0.5, init_audio=short_audio,
                                 inpaint_audio=short_audio, mask_start=0.1, mask_end=0.3, api_name="/generate")
        assert frames(path) == 4000


def test_oversized_uploads_are_refused(tmp_path):
    config = autoencoder_config()
    ui = demo.create_ui_for_model(tiny(config), config, limits=DemoLimits(max_file_size="20kb"))
    big = write_tone(tmp_path / "big.wav", 2.0, SR)  # 16-bit: 32 kB
    small = write_tone(tmp_path / "small.wav", 0.2, SR)
    assert os.path.getsize(big) > 20 * 1024 > os.path.getsize(small)
    with serve(ui) as url:
        assert page_config(url)["max_file_size"] == 20 * 1024  # the page refuses it before uploading, too
        with open(big, "rb") as f:
            response = httpx.post(f"{url}/gradio_api/upload", files={"files": ("big.wav", f)}, timeout=30)
        assert response.status_code == 413 and "maximum allowed size" in response.text
        client = connect(url, tmp_path)
        with pytest.raises(ValueError, match="exceeds the maximum file size"):
            client.predict(handle_file(big), api_name="/process")
        path, _ = client.predict(handle_file(small), api_name="/process")
        assert frames(path) == 1600


def test_a_request_past_the_time_limit_is_stopped_and_the_next_is_served(uncond_model, tmp_path):
    limits = DemoLimits(max_steps=ENDLESS, time_limit=0.5)
    with serve(demo.create_ui_for_model(uncond_model, uncond_config(), limits=limits)) as url:
        client = connect(url, tmp_path)
        with pytest.raises(AppError, match=r"Generation was stopped: it ran past this server's time limit of 0.5 s "
                                           r"per request \(--request-time-limit\) after \d+ of 1000000 steps"):
            client.predict(steps=ENDLESS, api_name="/generate")
        path, _ = client.predict(steps=2, seed="3", api_name="/generate")
        assert frames(path) == uncond_config()["sample_size"]


def test_cancelled_or_disconnected_requests_stop(uncond_model, tmp_path, caplog):
    limits = DemoLimits(max_steps=ENDLESS)
    with serve(demo.create_ui_for_model(uncond_model, uncond_config(), limits=limits)) as url, \
            caplog.at_level(logging.WARNING, logger="stable_audio_tools.interface.interfaces.limits"):
        client = connect(url, tmp_path)
        # 1. the client cancels its job (the page's Stop, job.cancel() of an API client)
        job = client.submit(steps=ENDLESS, api_name="/generate")
        wait_until_running(job)
        job.cancel()
        path, _ = client.submit(steps=2, api_name="/generate").result(timeout=RESULT_TIMEOUT)
        assert frames(path) == uncond_config()["sample_size"]
        assert caplog.text.count("its client went away") == 1

        # 2. the client closes its connection (a closed browser tab) while the request runs
        fn_index = next(d["id"] for d in page_config(url)["dependencies"] if d.get("api_name") == "generate")
        inputs = [ENDLESS, "-1", "dpmpp-3m-sde", 0.03, 500, False, None, 0.1]
        join = httpx.post(f"{url}/gradio_api/queue/join", timeout=30,
                          json={"data": inputs, "fn_index": fn_index, "session_hash": "gone-away"})
        assert join.status_code == 200, join.text
        with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": "gone-away"},
                          timeout=30) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:") and json.loads(line[5:])["msg"] == "progress":
                    break  # sampling has started: hang up
        path, _ = client.submit(steps=2, api_name="/generate").result(timeout=RESULT_TIMEOUT)
        assert frames(path) == uncond_config()["sample_size"]
        assert caplog.text.count("its client went away") == 2


def test_the_queue_is_bounded_and_stopping_the_server_stops_generations(uncond_model, tmp_path, caplog):
    limits = DemoLimits(max_steps=ENDLESS, queue_size=1)
    with caplog.at_level(logging.WARNING, logger="stable_audio_tools.interface.interfaces.limits"):
        with serve(demo.create_ui_for_model(uncond_model, uncond_config(), limits=limits)) as url:
            client = connect(url, tmp_path)
            running = client.submit(steps=ENDLESS, api_name="/generate")
            wait_until_running(running)
            waiting = client.submit(steps=2, api_name="/generate")  # the one place in the queue
            while waiting.status().code not in (Status.IN_QUEUE, Status.PROCESSING):
                time.sleep(0.05)
            with pytest.raises(QueueError, match="Queue is full"):
                client.submit(steps=2, api_name="/generate").result(timeout=RESULT_TIMEOUT)
            running.cancel()
            path, _ = waiting.result(timeout=RESULT_TIMEOUT)
            assert frames(path) == uncond_config()["sample_size"]
            wait_until_running(client.submit(steps=ENDLESS, api_name="/generate"))
        deadline = time.monotonic() + RESULT_TIMEOUT  # the server has closed: the generation ends at its next step
        while "the server is stopping" not in caplog.text:
            assert time.monotonic() < deadline, "the generation kept running after the server stopped"
            time.sleep(0.05)


def test_uploaded_files_are_removed_when_the_server_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    config = autoencoder_config()
    source = write_tone(tmp_path / "song.wav", 0.2, SR)
    with demo.private_gradio_temp_dir() as directory:
        assert directory.parent == tmp_path / "gradio"
        ui = demo.create_ui_for_model(tiny(config), config)
        with serve(ui) as url:
            path, _ = connect(url, tmp_path).predict(handle_file(source), api_name="/process")
            uploads = list(directory.rglob("song.wav"))
            assert len(uploads) == 1 and list(directory.rglob("output.wav"))  # the upload and Gradio's result copy
            assert frames(path) == 1600
        assert not uploads[0].exists()  # Gradio's own cleanup when the server stops
    assert not directory.exists() and list((tmp_path / "gradio").iterdir()) == []
    assert os.environ["GRADIO_TEMP_DIR"] == str(tmp_path / "gradio")


def test_run_gradio_flags_reach_the_server_and_sigterm_removes_its_files(tmp_path):
    config_path, ckpt_path = save_model(tmp_path, "uncond", uncond_config())
    base = tmp_path / "gradio_tmp"
    args = ["--model-config", config_path, "--ckpt-path", ckpt_path, "--max-steps", "3", "--max-file-size", "20kb",
            "--max-input-seconds", "0.5"]
    log_path = tmp_path / "run_gradio.log"
    with run_gradio_server(args, log_path, env={"GRADIO_TEMP_DIR": str(base)}, stop_signal=signal.SIGTERM) \
            as (proc, url):
        client = connect(url, tmp_path)
        assert slider_maximum(url, "Steps") == 3
        with pytest.raises(AppError, match=r"limit of 3 \(--max-steps\)|Value 4 is greater than maximum value 3"):
            client.predict(steps=4, api_name="/generate")
        long_audio = write_tone(tmp_path / "long.wav", 0.75, SR)
        with pytest.raises(AppError, match=r"Init audio is 0.8 s long; this server accepts at most 0.5 s"):
            client.predict(steps=2, use_init=True, init_audio=handle_file(long_audio), api_name="/generate")
        assert page_config(url)["max_file_size"] == 20 * 1024
        path, _ = client.predict(steps=3, api_name="/generate")
        assert frames(path) == uncond_config()["sample_size"]
        assert any(p.is_file() for p in base.rglob("*"))  # the upload and the results live under GRADIO_TEMP_DIR
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    assert [p for p in base.rglob("*") if p.is_file()] == []  # (Gradio's import leaves an empty folder here)
    assert not list(base.glob("stable_audio_tools_gradio_*"))  # the private directory is gone


# ----------------------------------------------------------------------------------------------- other model types
def test_autoencoder_limits(tmp_path):
    config = autoencoder_config()
    writer = common.OutputWriter(tmp_path / "out")
    model = tiny(config)
    interface = AutoencoderInterface(model, config, writer=writer, limits=DemoLimits(max_input_seconds=0.5))
    with pytest.raises(gr.Error, match=r"Input audio is 1.0 s long; this server accepts at most 0.5 s"):
        interface.process(write_tone(tmp_path / "long.wav", 1.0, SR))
    with pytest.raises(gr.Error, match="Input audio is 1.0 s long"):  # numpy values are checked too
        interface.process((SR, np.zeros(SR, dtype=np.float32)))
    # the time limit is checked before each top-level module runs (the encoder here)
    hurried = AutoencoderInterface(model, config, writer=writer, limits=DemoLimits(time_limit=1e-6))
    with pytest.raises(gr.Error, match="Processing was stopped: it ran past this server's time limit"):
        hurried.process(write_tone(tmp_path / "short.wav", 0.2, SR))
    path, _ = interface.process(write_tone(tmp_path / "short.wav", 0.2, SR))  # hooks do nothing outside requests
    assert frames(path) == 1600


@pytest.mark.skipif(not lm_available(), reason="stable_audio_tools.models.lm is not available")
def test_language_model_limits(tmp_path):
    from stable_audio_tools.interface.interfaces.lm import LMInterface

    config = lm_config()
    model = tiny(config)
    writer = common.OutputWriter(tmp_path / "out")
    interface = LMInterface(model, config, writer=writer, limits=DemoLimits(max_seconds=0.1))
    assert interface.max_seconds == 0.1
    with pytest.raises(gr.Error, match=r"\(0.2 s\) is above this server's limit of 0.1 s \(--max-seconds\)"):
        interface.generate(seconds_total=0.2, progress=None)
    path, _ = interface.generate(seconds_total=0.05, top_k=5, progress=None)
    assert frames(path) == 400
    hurried = LMInterface(model, config, writer=writer, limits=DemoLimits(time_limit=1e-6))
    with pytest.raises(gr.Error, match=r"time limit of 1e-06 s per request"):
        hurried.generate(seconds_total=0.05, progress=None)


def test_sliders_follow_the_limits(uncond_model):
    limits = DemoLimits(max_steps=50)
    ui = demo.create_ui_for_model(uncond_model, uncond_config(), limits=limits)
    steps = next(b for b in ui.blocks.values() if getattr(b, "label", None) == "Steps")
    assert steps.maximum == 50 and steps.value == 50 and ui.demo_limits is limits
