"""The ops dashboard in headless Chromium (Debian's ``chromium``), driven by Playwright: first against the
fake management API (tests/fake_management.py), then against the real one served by `switchboard dev`.

Playwright rather than Selenium: it drives the browser over the DevTools protocol with no separate driver
binary to match to the browser's version (Selenium needs chromedriver, Debian's ``chromium-driver``), it
launches a given executable (``executable_path="/usr/bin/chromium"``, so no browser download), and its
locators wait for the page by themselves, which keeps a polling page's tests free of sleeps."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.ops.client import ManagementClient, local_endpoint
from infra.ops.dashboard import DashboardServer, start
from tests.e2e.test_local_stack import RunningStack, wait_for
from tests.e2e.test_ops_local_stack import (
    dead_letter_unknown_conversation,
    fix_the_cause,
    group,
    stored,
)
from tests.fake_management import FakeManagementServer, running_fake

CHROMIUM = Path("/usr/bin/chromium")


def _chromium() -> Path:
    """Debian's chromium; a skip only where it cannot be installed (elsewhere its absence is a failure)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail(f"{CHROMIUM} missing but installable: apt-get install chromium (.ci/run does it as root)")
    pytest.skip(
        f"{CHROMIUM} missing and not installable here (not root, or no apt-get): apt-get install chromium"
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox refuses to run as root, which CI containers are
        launched = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


class Dashboards:
    """Opens dashboard pages; collects script errors, CSP violations and failed loads to fail the test on."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context()
        self.servers: list[DashboardServer] = []
        self.problems: list[str] = []

    def __call__(self, client: ManagementClient) -> Any:
        server, _ = start(client)
        self.servers.append(server)
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        page.goto(server.url)
        page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
        return page

    def close(self) -> None:
        self.context.close()
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def open_dashboard(browser: Any) -> Iterator[Dashboards]:
    dashboards = Dashboards(browser)
    yield dashboards
    dashboards.close()
    assert dashboards.problems == []


@pytest.fixture
def fake() -> Iterator[FakeManagementServer]:
    with running_fake() as server:
        yield server


def group_row(page: Any, job_type: str, error_class: str) -> Any:
    return page.locator(f'#failures tr.group[data-job-type="{job_type}"][data-error-class="{error_class}"]')


def test_the_page_shows_queues_and_failure_groups_latest_first(fake, open_dashboard):
    older = fake.state.dead_letter("cleanup", "InvalidJob", "invalid-job", 1, "2026-11-28T09:00:00+00:00")
    newer = fake.state.dead_letter(
        "send-message", "UnknownEntity", "unknown-entity", 7, "2026-11-29T09:00:00+00:00"
    )
    page = open_dashboard(ManagementClient(fake.endpoint()))
    assert page.locator("#status").inner_text() == "healthy"
    assert page.locator('#queues tr[data-job-type="send-message"] td.dlq').inner_text() == "7"
    classes = page.locator("#failures tr.group").evaluate_all("rows => rows.map(r => r.dataset.errorClass)")
    assert classes == ["UnknownEntity", "InvalidJob"]
    assert older[0] not in page.content()
    group_row(page, "cleanup", "InvalidJob").locator("td").first.click()
    assert older[0] in page.locator("#failures tr.samples pre").inner_text()
    assert newer[0] not in page.locator("#failures tr.samples").inner_text()


def test_a_redrive_from_the_page_shows_the_dry_run_count_then_progress_and_empties_the_group(
    fake, open_dashboard
):
    fake.state.dead_letter("send-message", "UnknownEntity", "unknown-entity", 7, "2026-11-29T09:00:00+00:00")
    kept = fake.state.dead_letter("send-message", "InvalidJob", "invalid-job", 2, "2026-11-29T08:00:00+00:00")
    fake.state.step = 1
    page = open_dashboard(ManagementClient(fake.endpoint()))
    row = group_row(page, "send-message", "UnknownEntity")
    row.locator("button.dry-run").click()
    assert row.locator(".matched").get_attribute("data-matched") == "7"
    posts = [b for m, p, b in fake.state.requests if p == "/redrive"]
    assert posts == [
        {
            "job_type": "send-message",
            "filter": {"error_class": "UnknownEntity", "reason": "unknown-entity"},
            "dry_run": True,
        }
    ]
    assert len(fake.state.dlq["send-message"]) == 9  # a dry run moves nothing
    assert page.locator("#failures tr.samples").count() == 0  # the button's click did not open the group
    row.locator("button.confirm").click()
    page.wait_for_selector("#failures td.redrive progress")
    group_row(page, "send-message", "UnknownEntity").wait_for(state="detached", timeout=20_000)
    assert [m["job_id"] for m in fake.state.dlq["send-message"]] == kept
    assert group_row(page, "send-message", "InvalidJob").count() == 1


def test_an_api_error_is_shown_on_the_page(fake, open_dashboard):
    fake.state.dead_letter("cleanup", "InvalidJob", "invalid-job", 1, "2026-11-28T09:00:00+00:00")
    page = open_dashboard(ManagementClient(fake.endpoint()))
    fake.state.dlq.pop("cleanup")  # the fake now answers 400 unknown-job-type to this group's redrive
    group_row(page, "cleanup", "InvalidJob").locator("button.dry-run").click()
    page.wait_for_selector("#error:not([hidden])")
    assert "400 unknown-job-type" in page.locator("#error").inner_text()
    assert open_dashboard.problems == [
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    ]
    open_dashboard.problems.clear()


# --- on the local stack -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path_factory.mktemp("dashboard"))
    running.start(fresh=True)
    yield running
    running.stop()


@pytest.mark.e2e
def test_on_the_local_stack_the_page_shows_a_dead_lettered_group_and_a_redrive_from_it_empties_it(
    stack, open_dashboard
):
    client = ManagementClient(local_endpoint(stack.data_dir))
    conversation, sender, message_ids = dead_letter_unknown_conversation(stack, 2)
    wait_for(lambda: (group(client, "send-message", "UnknownEntity") or {}).get("count") == 2, timeout=60)
    wait_for(lambda: client.failures()["dlq_depth"]["send-message"] == 2, timeout=60)
    page = open_dashboard(client)
    row = group_row(page, "send-message", "UnknownEntity")
    assert row.locator("td.count").inner_text() == "2"
    assert page.locator('#queues tr[data-job-type="send-message"] td.dlq').inner_text() == "2"
    fix_the_cause(stack, conversation, sender)
    row.locator("button.dry-run").click()
    assert row.locator(".matched").get_attribute("data-matched") == "2"
    assert client.failures()["dlq_depth"]["send-message"] == 2  # the dry run moved nothing
    row.locator("button.confirm").click()
    group_row(page, "send-message", "UnknownEntity").wait_for(state="detached", timeout=60_000)
    wait_for(lambda: stored(stack, message_ids) == 2, timeout=60)
    assert client.failures()["dlq_depth"]["send-message"] == 0
    page.locator('#queues tr[data-job-type="send-message"] td.dlq:text-is("0")').wait_for(timeout=15_000)
