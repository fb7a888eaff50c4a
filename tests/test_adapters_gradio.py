"""run_gradio.py --adapter PATH[:STRENGTH]: adapters are loaded onto the served model and get a strength slider."""
import json
import time

import pytest
import torch
from safetensors.torch import save_file

from stable_audio_tools.interface import gradio as demo
from stable_audio_tools.interface.interfaces.adapters import parse_adapter_flag
from stable_audio_tools.models.adapters import adapter_parameters, apply_adapters, list_adapters, save_adapter
from stable_audio_tools.models.factory import create_model_from_config

from test_adapters_train import TINY_DIT


def test_parse_adapter_flag():
    assert parse_adapter_flag("style.safetensors") == ("style.safetensors", 1.0)
    assert parse_adapter_flag("style.safetensors:0.4") == ("style.safetensors", 0.4)
    assert parse_adapter_flag("C:\\loras\\a.safetensors") == ("C:\\loras\\a.safetensors", 1.0)
    assert parse_adapter_flag("dir/peft:2") == ("dir/peft", 2.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter_gradio")
    torch.manual_seed(0)
    model = create_model_from_config(TINY_DIT)
    save_file(model.state_dict(), str(root / "model.safetensors"))
    (root / "model_config.json").write_text(json.dumps(TINY_DIT))
    apply_adapters(model, {"type": "lora", "rank": 2, "include": ["to_qkv"]}, name="drums")
    with torch.no_grad():
        for param in adapter_parameters(model):
            param.normal_()
    save_adapter(model, root / "drums.safetensors")
    return root


def _slider_events(ui):
    sliders = {block.label: block for block in ui.blocks.values()
               if type(block).__name__ == "Slider" and str(block.label).startswith("Adapter strength")}
    events = {}
    for fn in ui.fns.values():
        for block in fn.inputs:
            if block in sliders.values():
                events[block.label] = fn.fn
    return sliders, events


def test_adapters_get_a_strength_slider_each(files):
    ui = demo.create_ui(model_config_path=files / "model_config.json", ckpt_path=files / "model.safetensors",
                        device="cpu", adapters=[(str(files / "drums.safetensors"), 0.5),
                                                (str(files / "drums.safetensors"), 1.0)])
    sliders, events = _slider_events(ui)
    assert set(sliders) == {"Adapter strength: drums", "Adapter strength: drums_2"}
    assert sliders["Adapter strength: drums"].value == 0.5
    names = [f.api_name for f in ui.fns.values() if getattr(f, "api_visibility", "public") == "public"]
    assert names == ["generate"]  # the sliders are UI-only events, not API endpoints
    events["Adapter strength: drums"](1.7)
    cells = events["Adapter strength: drums"].__closure__  # the served model the slider acts on
    target = next(c.cell_contents for c in cells if isinstance(c.cell_contents, torch.nn.Module))
    assert list_adapters(target)["drums"].strength == 1.7
    assert list_adapters(target)["drums_2"].strength == 1.0


def test_bad_adapter_file_stops_run_gradio(files, tmp_path):
    import run_gradio

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(SystemExit) as stopped:
        run_gradio.main(["--model-config", str(files / "model_config.json"), "--ckpt-path",
                         str(files / "model.safetensors"), "--device", "cpu", "--adapter", f"{bad}:0.5"])
    assert "bad.safetensors is not an adapter file" in str(stopped.value.code)


@pytest.mark.browser
@pytest.mark.slow
def test_adapter_slider_in_the_browser(files):
    """The page shows the adapter's slider; moving it changes the served model's adapter strength."""
    browser_test = pytest.importorskip("test_gradio_browser")  # skips without Chromium / Playwright
    ui = demo.create_ui(model_config_path=files / "model_config.json", ckpt_path=files / "model.safetensors",
                        device="cpu", adapters=[(str(files / "drums.safetensors"), 0.5)])
    _, events = _slider_events(ui)
    cells = events["Adapter strength: drums"].__closure__
    model = next(c.cell_contents for c in cells if isinstance(c.cell_contents, torch.nn.Module))
    with browser_test.sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=browser_test.CHROMIUM,
                                              args=browser_test.CHROMIUM_ARGS)
        try:
            with browser_test.serve(ui) as url:
                page = browser_test.open_page(chromium, url)
                slider = page.locator("#adapter-strength-drums")
                slider.wait_for()
                assert "Adapter strength: drums" in slider.inner_text()
                browser_test.set_number(page, "adapter-strength-drums", 1.25)
                deadline = time.time() + 20
                while list_adapters(model)["drums"].strength != 1.25 and time.time() < deadline:
                    time.sleep(0.2)
                assert list_adapters(model)["drums"].strength == 1.25
                browser_test.close(page)
        finally:
            chromium.close()
