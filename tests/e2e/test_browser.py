"""The Airflow UI in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright for
Python, never ``playwright install``) on a real api-server, scheduler, dag-processor and triggerer.

- The NextLeg connection form shows our standard-field labels and placeholders (no Login), and each extra
  field of the provider metadata with its label, description and default, ``redis_conn_id`` included.
- A finished chain task shows its extra link, pointing at its result's image, which the browser opens.

Screenshots go to ``output/browser/`` (or ``$NEXTLEG_SCREENSHOTS``); the test prints the folder.
Marked ``browser``: ``make test-browser``; CI runs it once, on the newest Airflow.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT
from servers import need_binary

from airflow_provider_nextleg.emulator import EmulatorServer, EmulatorSettings
from airflow_provider_nextleg.get_provider_info import CONNECTION_FIELDS, UI_FIELD_BEHAVIOUR

from .services import AirflowServices

pytestmark = [pytest.mark.browser, pytest.mark.services]

DAG_ID = "nextleg_imagine_variation_upscale"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",  # this machine's network is closed: no calls home
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = Path(os.environ.get("NEXTLEG_SCREENSHOTS") or REPO_ROOT / "output" / "browser")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"\nbrowser test screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    # Jobs of 1.5 to 4 s: each ends while its task still waits on the worker (5 s), so the chain takes
    # about 40 s and meets no scheduler race on triggers that fire at once.
    with EmulatorServer(EmulatorSettings(time_scale=0.05, rate_limit=False)) as server:
        yield server


@pytest.fixture(scope="module")
def services(emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServices]:
    home = tmp_path_factory.mktemp("airflow-browser")
    images = (home / "images").as_uri()
    with AirflowServices(
        home, emulator.airflow_connection_json(), dag_id=DAG_ID, env={"NEXTLEG_IMAGES_ROOT": images}
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = need_binary("chromium", "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


def shown(default: Any) -> str:
    """How the form writes a default in its input: 30.0 as ``30``, None as nothing."""
    if default is None:
        return ""
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def test_the_connection_form_shows_our_fields_labels_and_defaults(
    services: AirflowServices, page: Any, screenshots: Path
):
    page.goto(f"{services.api.base_url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    connection_type = dialog.get_by_role("combobox", name="Connection Type")
    connection_type.click()
    connection_type.fill("NextLeg")
    page.get_by_role("option", name="NextLeg", exact=True).click()
    dialog.get_by_text("Base URL", exact=True).wait_for()
    page.screenshot(path=screenshots / "connection-form-standard-fields.png", full_page=True)

    labels = [label.inner_text().strip() for label in dialog.locator("label").all()]
    for field, label in UI_FIELD_BEHAVIOUR["relabeling"].items():
        assert label in labels, (field, labels)
    assert "Login" not in labels  # hidden-fields
    for field, placeholder in UI_FIELD_BEHAVIOUR["placeholders"].items():
        assert dialog.locator(f"input[name={field}]").get_attribute("placeholder") == placeholder

    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    dialog.get_by_text(CONNECTION_FIELDS["redis_conn_id"]["label"], exact=True).wait_for()
    page.screenshot(path=screenshots / "connection-form-extra-fields.png", full_page=True)
    text = dialog.inner_text()
    assert "redis_conn_id" in CONNECTION_FIELDS
    for name, field in CONNECTION_FIELDS.items():
        assert field["label"] in text, name
        assert field["description"] in text, name
        schema = field["schema"]
        value = dialog.locator(f"input[name=element_{name}]")
        if "enum" not in schema:  # a choice may be drawn as a select rather than an input
            assert value.input_value() == shown(schema.get("default")), name
    print(f"connection form: {screenshots / 'connection-form-extra-fields.png'}")


def test_a_finished_chain_task_links_to_its_image(
    services: AirflowServices, emulator: EmulatorServer, page: Any, screenshots: Path
):
    run_id = services.trigger()
    assert services.wait_finished(run_id) == "success", services.logs()
    task = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/upscale"
    result = services.api.get(f"{task}/xcomEntries/return_value").json()["value"]
    result = json.loads(result) if isinstance(result, str) else result
    links = {
        name: url for name, url in services.api.get(f"{task}/links").json()["extra_links"].items() if url
    }
    assert result["image_url"] in links.values(), (links, result["image_url"])

    quoted = urllib.parse.quote(run_id, safe="")
    page.goto(f"{services.api.base_url}/dags/{DAG_ID}/runs/{quoted}/tasks/upscale/details")
    page.get_by_text("Extra Links", exact=True).wait_for()
    page.screenshot(path=screenshots / "upscale-task-extra-link.png", full_page=True)
    for name, url in links.items():
        link = page.get_by_role("link", name=name, exact=True)
        assert link.get_attribute("href") == url, name
        assert link.get_attribute("target") == "_blank", name

    # The link opens the image itself, in the browser (the emulator's CDN serves browsers, as the real one).
    image = page.context.new_page()
    answer = image.goto(result["image_url"])
    assert answer is not None
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("image/")
    image.screenshot(path=screenshots / "upscale-image.png")
    print(f"extra link and image: {screenshots}/upscale-task-extra-link.png, upscale-image.png")
