"""The model pages, used for real: the server under uvicorn on 127.0.0.1, the page in Debian's headless Chromium
driven by Playwright (``executable_path``; no browser download). A digit is drawn with the mouse and a real
digit image uploaded; a row is typed; the answers shown must equal ``load(path).predict`` on the same input.
Without /usr/bin/chromium or the playwright package the browser tests skip (the HTTP-level tests still run).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from serve_models import TASKS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
API_KEY = "page-test-key"
SCRIPT = "<script>window.__pwned = 1</script>"
IMG = '<img src=x onerror="window.__pwned = 2">'
DIGITS_CARD = {"intended_use": "Reads **8x8 digits**; see [the data](https://archive.ics.uci.edu/dataset/80).",
               "limitations": "- digits only\n- white ink on black"}

# A 3-channel (RGB) image model of 12x12 pictures, with the 8-bit preprocessing (x / 255) saved in the file.
COLOUR_CNN = {"name": "colour_cnn", "layers": [
    {"kind": "Input", "name": "picture", "shape": [3, 12, 12]},
    {"kind": "Conv2D", "name": "conv", "filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"kind": "MaxPool2D", "name": "pool", "pool_size": 2},                                   # (8, 6, 6)
    {"kind": "Flatten", "name": "flatten"},
    {"kind": "Dense", "name": "logits", "units": 3}]}


def _browser_missing() -> str | None:
    if not CHROMIUM.is_file():
        return "Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright; never `playwright install`)"
    return None


needs_browser = pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))


@pytest.fixture(scope="module")
def page_files(trained, model_files, tmp_path_factory):
    """The trained digits CNN (with its history and a card), the tabular models, and one full of hostile text."""
    from modelkeep.artifact import save
    from modelkeep.nn import build
    from modelkeep.spec import load_spec

    folder = tmp_path_factory.mktemp("pages")
    digits = save(trained, folder / "digits.safetensors", card=DIGITS_CARD, durable=False)
    spec, _ = TASKS["multiclass"]
    hostile = save(build(load_spec(spec), seed=3), folder / "hostile.safetensors", durable=False,
                   task="classification", labels=[SCRIPT, IMG, "c"], parent=digits,
                   lineage={"note": SCRIPT},
                   card={"intended_use": f"{SCRIPT} **bold** [good](https://example.org/x) [bad](javascript:alert(1))",
                         "limitations": IMG})
    from modelkeep.processing.preprocess import Rescale

    colour = save(build(load_spec(COLOUR_CNN), seed=4), folder / "colour.safetensors", durable=False,
                  task="classification", labels=["red", "green", "blue"], preprocessing=Rescale(1 / 255))
    return {"digits": digits, "hostile": hostile, "multiclass": model_files["multiclass"],
            "regression": model_files["regression"], "tokens": model_files["tokens"], "colour": colour}


@pytest.fixture(scope="module")
def base_url(page_files):
    """The app under a real uvicorn on a free loopback port, in a thread; API keys on."""
    import uvicorn

    from modelkeep.serve import ServeSettings, create_app

    settings = ServeSettings(sources=tuple(str(p) for p in page_files.values()), api_keys=(API_KEY,),
                             max_queue_delay_us=1000)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1100, "height": 900})
        yield context
        context.close()


@pytest.fixture()
def tab(browser):
    """A fresh tab that records console errors (a CSP violation is one) and uncaught exceptions."""
    page = browser.new_page()
    page.problems = []
    page.on("console", lambda message: page.problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    yield page
    page.close()


def _predicted(page, submit: str) -> tuple[np.ndarray | None, dict]:
    """Click ``submit``; the rows the page sent (None for a file upload) and what it shows."""
    with page.expect_request(lambda request: "/predict" in request.url) as sent:
        page.click(submit)
    page.wait_for_selector("#result .headline")
    body = sent.value.post_data_buffer
    rows = None if body is None or body.startswith(b"--") else np.asarray(json.loads(body)["instances"], np.float32)
    shown = page.eval_on_selector_all("#result tr[data-label]", "rows => rows.map(r => [r.dataset.label, "
                                      "Number(r.dataset.probability), r.cells[1].textContent])")
    return rows, {"label": page.text_content(".predicted-label") if shown else None, "rows": shown,
                  "value": page.get_attribute("#result .headline", "data-value")}


def _assert_shows(shown: dict, expected) -> None:
    """The page shows ``expected`` (a ``Prediction`` of one row): the label, and every class's probability."""
    probabilities = dict(zip(expected.class_names, expected.probabilities[0].tolist()))
    assert shown["label"] == expected.labels[0]
    assert len(shown["rows"]) == min(10, len(probabilities))
    for label, probability, text in shown["rows"]:
        assert probability == pytest.approx(probabilities[label], rel=1e-5, abs=1e-6)
        assert abs(float(text) - probabilities[label]) <= 5.1e-5  # shown to 4 places


def _keep_screenshot(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    folder = Path(os.environ.get("MODELKEEP_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, folder / name)
    return shot


def _digit_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255 / 16).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


@needs_browser
def test_digits_page_draw_upload_and_predict(tab, base_url, page_files, digits_splits, tmp_path):
    from modelkeep import load

    model = load(page_files["digits"])
    tab.goto(f"{base_url}/models/digits")
    assert tab.inner_text("#model-card strong") == "8x8 digits"  # Markdown rendered
    assert tab.get_attribute("#model-card a", "href") == "https://archive.ics.uci.edu/dataset/80"
    assert tab.locator("#model-card li").count() == 2
    assert tab.locator("#parameters tbody tr").count() == 9  # every layer of DIGITS_CNN
    assert "35,914" in tab.inner_text("#parameters tfoot")
    epochs = len(model.history)
    assert tab.locator("#learning-curves figure.chart").count() >= 2  # loss and accuracy at least
    assert tab.get_attribute("figure[data-quantity=loss] li.validation", "data-points") == str(epochs)
    assert "not derived" in tab.inner_text("#lineage")

    canvas = tab.locator("#canvas").bounding_box()
    left, top, size = canvas["x"], canvas["y"], canvas["width"]
    tab.mouse.move(left + size * 0.3, top + size * 0.15)  # a 7: the bar, then the stroke down
    tab.mouse.down()
    for x, y in [(0.5, 0.15), (0.72, 0.15), (0.6, 0.5), (0.5, 0.88)]:
        tab.mouse.move(left + size * x, top + size * y, steps=8)
    tab.mouse.up()
    tab.click("#predict")  # no key yet: refused, and the page says why
    tab.wait_for_selector("#status.error")
    assert "401" in tab.inner_text("#status") and "API key" in tab.inner_text("#status")
    tab.fill("#api-key", API_KEY)
    assert tab.evaluate("sessionStorage.getItem('modelkeep-api-key')") == API_KEY

    rows, shown = _predicted(tab, "#predict")
    assert rows.shape == (1, 1, 8, 8)
    white = float(tab.input_value("#ink"))
    assert rows[0, 0, 1, 3] > 0.5 * white and rows[0, 0, 7, 0] == 0  # ink on the bar, none in a far corner
    _assert_shows(shown, model.predict(rows))

    test = digits_splits.test  # a real digit that the model recognises from its own pixels, surely
    answers = model.predict(test.x)
    index = next(i for i in range(len(test))
                 if answers.labels[i] == test.labels[test.y[i]] and answers.probabilities[i].max() > 0.9)
    picture = tmp_path / "digit.png"
    picture.write_bytes(_digit_png(test.x[index, 0]))
    tab.set_input_files("#file", str(picture))
    tab.fill("#ink", "16")  # the digits' own scale: 0-16
    tab.wait_for_selector("#status:has-text('Drew digit.png')")  # decoded and drawn (asynchronously)
    _, shown = _predicted(tab, "#predict-file")  # the file itself: decoded by the server, values 0-255
    decoded = np.frombuffer(_digit_png_pixels(picture), np.uint8).reshape(1, 1, 8, 8).astype(np.float32)
    _assert_shows(shown, model.predict(decoded))

    rows, shown = _predicted(tab, "#predict")  # the picture on the canvas, shrunk back to 8x8 at the digits' scale
    np.testing.assert_allclose(rows[0, 0], test.x[index, 0], atol=16 / 255)
    _assert_shows(shown, model.predict(rows))
    assert shown["label"] == test.labels[test.y[index]]
    assert [p for p in tab.problems if "status of 401" not in p] == []  # only the refusal without a key
    print("screenshot:", _keep_screenshot(tab, tmp_path, "page-digits.png"))


def _digit_png_pixels(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("L").tobytes()


@needs_browser
def test_row_and_token_pages_take_typed_inputs(tab, base_url, page_files, tmp_path):
    from modelkeep import load

    tab.goto(f"{base_url}/models/multiclass")
    tab.evaluate(f"sessionStorage.setItem('modelkeep-api-key', '{API_KEY}')")
    tab.reload()
    assert tab.input_value("#api-key") == API_KEY  # kept for the tab, not typed again
    row = [5.5, 2.0, 7.25, 3.0]
    for index, value in enumerate(row):
        tab.fill(f"input.cell[data-index='{index}']", str(value))
    rows, shown = _predicted(tab, "#predict")
    np.testing.assert_array_equal(rows, [row])
    _assert_shows(shown, load(page_files["multiclass"]).predict(np.asarray([row], np.float32)))
    _keep_screenshot(tab, tmp_path, "page-multiclass.png")

    tab.goto(f"{base_url}/models/regression")
    tab.fill("#csv", "1.5, -2, 0.25")
    rows, shown = _predicted(tab, "#predict")
    expected = load(page_files["regression"]).predict(np.asarray([[1.5, -2, 0.25]], np.float32))
    assert json.loads(shown["value"]) == pytest.approx(np.ravel(expected.values).tolist(), rel=1e-5)

    tab.goto(f"{base_url}/models/tokens")  # token ids: typed as JSON
    tab.fill("#text", "[1, 2, 3, 4, 5, 6, 7, 8]")
    _, shown = _predicted(tab, "#predict")
    _assert_shows(shown, load(page_files["tokens"]).predict(np.arange(1, 9, dtype=np.int64)[None]))
    assert tab.problems == []


@needs_browser
def test_hostile_text_is_shown_as_text(tab, base_url):
    tab.goto(f"{base_url}/models/hostile")
    card = tab.inner_text("#model-card")
    assert SCRIPT in card and IMG in card and "bold" in card
    assert tab.locator("#model-card a").count() == 1  # the https link; the javascript: one stays text
    assert tab.get_attribute("#model-card a", "href") == "https://example.org/x"
    assert SCRIPT in tab.inner_text("#lineage")
    assert tab.get_attribute("#lineage a", "href") == "/models/digits"  # its parent, served here too
    tab.fill("#api-key", API_KEY)
    tab.fill("#csv", "1, 2, 3, 4")
    _, shown = _predicted(tab, "#predict")
    assert {label for label, _, _ in shown["rows"]} == {SCRIPT, IMG, "c"}
    assert tab.evaluate("window.__pwned") is None
    assert tab.locator("main script, main img").count() == 0
    assert tab.problems == []


def test_pages_carry_strict_headers_and_escape_file_text(base_url):
    import httpx

    with httpx.Client(base_url=base_url, timeout=30) as http:
        index = http.get("/")
        assert index.status_code == 200 and 'href="/models/digits"' in index.text
        page = http.get("/models/hostile")  # open without a key: it shows no secret
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script>window" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page.text
        assert 'href="javascript' not in page.text
        assert page.text.count("<script") == 1  # the page's own, external script
        script = http.get("/static/page.js")
        assert script.headers["content-type"].startswith("text/javascript") and b"innerHTML" not in script.content
        assert script.headers["x-content-type-options"] == "nosniff"
        assert http.get("/static/..%2Fpage.py").status_code == 404
        assert http.get("/static/other.js").status_code == 404
        assert http.get("/models/nothing").json()["error"].startswith("no model named 'nothing'")
        assert http.post("/v1/models/hostile/predict", json={"instances": [[1, 2, 3, 4]]}).status_code == 401


def test_a_registry_model_page_shows_its_registry_card_and_parent_chain(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from serve_models import save_task_model
    from modelkeep import registry as api
    from modelkeep.serve import ServeSettings, create_app

    monkeypatch.setenv("MODELKEEP_REGISTRY", str(tmp_path / "registry"))
    base = api.push(save_task_model("binary", tmp_path / "b0.safetensors", seed=0), "base")
    child = api.push(save_task_model("binary", tmp_path / "b1.safetensors", seed=1), "churn", parent=base.ref,
                     alias="production", card=f"# Churn\n\nFine-tuned from *base*.\n\n{SCRIPT}\n")
    with TestClient(create_app(ServeSettings(sources=("registry://churn@production",)))) as http:
        page = http.get("/models/churn")
    assert page.status_code == 200
    lineage = page.text.split('id="lineage"')[1]
    assert lineage.index(child.ref) < lineage.index(base.ref)  # newest first, down to the root
    assert "@production" in lineage
    assert "<h4>Churn</h4>" in page.text and "<em>base</em>" in page.text
    assert "&lt;script&gt;window.__pwned" in page.text and "<script>window" not in page.text
    assert "registry churn@production" in page.text and str(tmp_path) not in page.text  # no server paths shown


def _png(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    """``pixels`` (H, W, 3) of 0-255 as a PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


@needs_browser
def test_colour_image_page_uploads_resizes_and_draws_in_rgb(tab, base_url, page_files, tmp_path):
    """A 3-channel model: a picture of the model's size is sent pixel for pixel in its three channels; a larger
    one is resized to 12x12 as the server resizes an upload; a stroke in a chosen colour inks that channel only.
    Every answer shown equals ``load(path).predict`` on what was sent (or, for the file, on the server's decode)."""
    from modelkeep import load
    from modelkeep.data.images import decode_image
    from modelkeep.data.limits import ReaderLimits

    model = load(page_files["colour"])
    tab.goto(f"{base_url}/models/colour")
    tab.fill("#api-key", API_KEY)
    assert tab.get_attribute("#canvas", "width") == "288" and tab.get_attribute("#preview", "width") == "12"
    assert float(tab.input_value("#ink")) == 255  # white, as Rescale(1/255) says
    assert "colour (RGB)" in tab.inner_text("#try-it-form")

    pixels = np.random.default_rng(7).integers(0, 256, (12, 12, 3))  # every pixel its own colour
    picture = tmp_path / "colour.png"
    picture.write_bytes(_png(pixels))
    tab.set_input_files("#file", str(picture))
    tab.wait_for_selector("#status:has-text('Drew colour.png')")
    rows, shown = _predicted(tab, "#predict")
    assert rows.shape == (1, 3, 12, 12)
    np.testing.assert_allclose(rows[0], pixels.transpose(2, 0, 1), atol=1.0)  # R, G, B planes, 0-255
    _assert_shows(shown, model.predict(rows))
    _, shown = _predicted(tab, "#predict-file")
    _assert_shows(shown, model.predict(pixels.transpose(2, 0, 1)[None].astype(np.float32)))

    quadrants = np.zeros((48, 40, 3))  # larger and not square: stretched to 12x12, as the server does
    quadrants[:24, :20] = (255, 0, 0)
    quadrants[:24, 20:] = (0, 255, 0)
    quadrants[24:, :20] = (0, 0, 255)
    quadrants[24:, 20:] = (255, 255, 255)
    big = tmp_path / "quadrants.png"
    big.write_bytes(_png(quadrants))
    tab.set_input_files("#file", str(big))
    tab.wait_for_selector("#status:has-text('Drew quadrants.png')")
    rows, shown = _predicted(tab, "#predict")
    server = decode_image(str(big), (12, 12), "RGB", ReaderLimits())
    for y, x in [(1, 1), (1, 10), (10, 1), (10, 10)]:  # inside each quadrant: its colour, as the server's resize
        np.testing.assert_allclose(rows[0, :, y, x], server[:, y, x], atol=8)
    assert np.abs(rows[0] - server).mean() < 12  # the borders blur a little differently
    _assert_shows(shown, model.predict(rows))
    _, shown = _predicted(tab, "#predict-file")
    _assert_shows(shown, model.predict(server[None]))

    tab.click("#clear")
    tab.fill("#ink-colour", "#00ff00")
    box = tab.locator("#canvas").bounding_box()
    row_5 = box["y"] + box["height"] * 5.5 / 12  # along the middle of the model's sixth row of pixels
    tab.mouse.move(box["x"] + box["width"] * 0.1, row_5)
    tab.mouse.down()
    tab.mouse.move(box["x"] + box["width"] * 0.9, row_5, steps=10)
    tab.mouse.up()
    rows, shown = _predicted(tab, "#predict")
    middle = rows[0, :, 5, 2:10]
    assert middle[1].min() > 200 and middle[0].max() < 30 and middle[2].max() < 30  # green ink only
    assert rows[0, :, 0, :].max() == 0  # nothing at the top
    _assert_shows(shown, model.predict(rows))
    assert tab.problems == []
    print("screenshot:", _keep_screenshot(tab, tmp_path, "page-colour.png"))
