"""repocket.web.admin in a real headless Chromium (Playwright), served on a loopback port, on a real Redis.

Each step saves a screenshot under ``$REPOCKET_ARTIFACTS`` (default
``tests/browser/artifacts/``). Skipped, saying why, without Playwright or
without a Chromium binary (``$REPOCKET_CHROMIUM``, default ``/usr/bin/chromium``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from repocket import ActiveRecord, attributes
from repocket.attributes import PROTECT
from repocket.web.admin import admin_app
from repocket.web.admin.serve import running

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")

CHROMIUM = os.environ.get("REPOCKET_CHROMIUM", "/usr/bin/chromium")
if not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set $REPOCKET_CHROMIUM)",
                allow_module_level=True)

ARTIFACTS = Path(os.environ.get("REPOCKET_ARTIFACTS") or Path(__file__).parent / "artifacts")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.usefixtures("repocket_connection")


class Writer(ActiveRecord):
    name = attributes.Unicode(index=True)
    born = attributes.Integer(index=True, default=1900)
    token = attributes.Unicode(secret=True, null=True)
    journal = attributes.ByteStream()

    class Meta:
        changes = True
        history = 5


class Novel(ActiveRecord):
    title = attributes.Unicode(index=True)
    writer = attributes.Pointer(Writer, null=True, on_delete=PROTECT, related_name="novels")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 760}, device_scale_factor=1)
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    yield tab
    context.close()


@pytest.fixture
def site() -> Iterator[str]:
    with running(admin_app([Writer, Novel], title="Library admin")) as url:
        yield url


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("body").screenshot(path=str(ARTIFACTS / f"{name}.png"))  # (the page, cropped to its content)


def _writers() -> tuple[Writer, Writer]:
    le_guin = Writer.objects.create(name="Ursula K. Le Guin", born=1929, token="tok-1")
    le_guin.append_journal(b"1969: The Left Hand of Darkness\n")
    pratchett = Writer.objects.create(name="Terry Pratchett", born=1948)
    Writer.objects.create(name="Iain M. Banks", born=1954)
    Novel.objects.create(title="The Dispossessed", writer=le_guin)
    Novel.objects.create(title="Mort", writer=pratchett)
    return le_guin, pratchett


def test_list_filter_and_open_a_record_with_a_live_tail(page: Any, site: str) -> None:
    """From the keyboard: list, filter with '/', open a record, and see an append arrive in its tail."""
    le_guin, _ = _writers()
    page.goto(site + "/")
    assert page.get_by_role("row", name="Writer").get_by_role("cell").nth(0).inner_text() == "3"
    _shot(page, "01-models")
    page.get_by_role("link", name="Writer", exact=True).first.click()
    assert page.locator("table.records tbody tr").count() == 3
    page.keyboard.press("/")  # the filter box, from the keyboard
    page.keyboard.type("Ursula K. Le Guin")
    assert page.evaluate("document.activeElement.id") == "filter-name"
    _shot(page, "02-filter-typed")
    page.keyboard.press("Enter")
    page.wait_for_url("**/writer?name=*")
    assert page.locator("table.records tbody tr").count() == 1
    _shot(page, "03-filtered")
    page.get_by_role("link", name=str(le_guin.pk)).click()
    assert page.get_by_role("heading", level=1).inner_text().startswith("Writer")
    assert "tok-1" not in page.content()
    assert page.get_by_role("link", name="Novel", exact=False).count() >= 1
    le_guin.append_journal(b"1974: The Dispossessed\n")
    sync_api.expect(page.locator("pre.tail")).to_contain_text("1974: The Dispossessed")  # appended live
    _shot(page, "04-record")


def test_edit_shows_the_validation_error_at_the_field(page: Any, site: str) -> None:
    """A refused edit shows the message at its field and focuses the error summary; a good one saves."""
    le_guin, _ = _writers()
    page.goto(f"{site}/writer/{le_guin.pk}/edit")
    page.get_by_label("born").fill("nineteen")
    page.get_by_role("button", name="Save").click()
    field = page.locator(".field.invalid")
    sync_api.expect(field.locator("p.error")).to_contain_text("born")
    assert field.locator("input").get_attribute("id") == "input-born"
    assert page.evaluate("document.activeElement.id") == "error-summary"
    _shot(page, "05-edit-error")
    page.get_by_label("born").fill("1930")
    page.get_by_role("button", name="Save").click()
    sync_api.expect(page.locator(".notice")).to_have_text("Saved.")
    assert Writer.objects.get(le_guin.pk).born == 1930


def test_delete_of_a_protected_record_is_refused(page: Any, site: str) -> None:
    """The delete page of a record a PROTECT Pointer holds shows the refusal and no delete button."""
    le_guin, _ = _writers()
    page.goto(f"{site}/writer/{le_guin.pk}")
    page.get_by_role("link", name="Delete…").click()
    sync_api.expect(page.get_by_role("heading", name="The delete would be refused")).to_be_visible()
    assert page.get_by_role("button", name="Yes, delete it").count() == 0
    sync_api.expect(page.locator(".refusal")).to_contain_text("Novel")
    _shot(page, "06-delete-refused")
    assert Writer.objects.filter(pk=le_guin.pk).count() == 1


def test_check_then_repair_after_confirming(page: Any, site: str, redis: Any) -> None:
    """Check shows a missing entry, Repair asks first, and after confirming the model is consistent."""
    le_guin, _ = _writers()
    redis.srem(Writer._meta.for_pk(le_guin.pk).ids_key, str(le_guin.pk))
    page.goto(f"{site}/writer/check")
    sync_api.expect(page.get_by_role("heading", name="Missing entries (1)")).to_be_visible()
    _shot(page, "07-check")
    page.get_by_role("link", name="Repair…").click()
    sync_api.expect(page.get_by_role("button", name="Yes, repair")).to_be_visible()
    assert not Writer.objects.check().ok  # (nothing repaired before confirming)
    _shot(page, "08-repair-confirm")
    page.get_by_role("button", name="Yes, repair").click()
    sync_api.expect(page.locator(".notice")).to_contain_text("Repaired: 1 problem")
    sync_api.expect(page.locator("p.ok")).to_contain_text("Consistent")
    _shot(page, "09-repaired")
    assert Writer.objects.check().ok
