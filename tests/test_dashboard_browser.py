"""The dashboard in a real headless browser: Debian's chromium via Playwright.

A master with real worker processes renders while the page is watched; a
worker is killed with SIGKILL; jobs are submitted through the form and by
clicking the preview. The finished page is saved as
``test-artifacts/dashboard.png``.

Without a usable chromium (``/usr/bin/chromium``, or FRAKTAL_CHROMIUM) these
tests skip, unless FRAKTAL_REQUIRE_BROWSER=1 (as in CI): then they fail.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from fraktal.dashboard.server import Dashboard
from fraktal.master.scheduler import JobStatus
from fraktal.render.spec import make_spec

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = os.environ.get("FRAKTAL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACT = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard.png"
WAIT_MS = 120_000

# Boundary-heavy, so the job lasts long enough to kill a worker in the middle.
SPEC = make_spec(
    width=480,
    height=320,
    center_re=-0.7436,
    center_im=0.1318,
    span=0.02,
    max_iter=3000,
    tile_size=32,
)
FORM = {"center": "-0.7453,0.1127", "span": "0.01", "size": "240x160"}
FORM_SPEC = make_spec(
    width=240, height=160, center_re=-0.7453, center_im=0.1127, span=0.01, max_iter=800
)

COUNT_COLOURS = """
canvas => {
  const pixels = canvas.getContext("2d")
    .getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  let background = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    colours.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
    if (pixels[i] === 40 && pixels[i + 1] === 44 && pixels[i + 2] === 52) {
      background += 1;
    }
  }
  return {colours: colours.size, background: background};
}
"""


def unavailable(why: str) -> None:
    if os.environ.get("FRAKTAL_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{why} (FRAKTAL_REQUIRE_BROWSER=1)")
    pytest.skip(f"{why}; set FRAKTAL_REQUIRE_BROWSER=1 to make this a failure")


@pytest.fixture
def browser(tmp_path):
    """A fresh chromium profile; yields a function that opens a page."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        unavailable(f"Playwright for Python is not installed: {exc}")

    with sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1366, "height": 900},
            )
        except Error as exc:
            unavailable(f"chromium at {CHROMIUM} did not start: {exc}")
        errors: list[str] = []

        def open_page(url: str, width: int = 1366):
            page = context.new_page()
            page.set_viewport_size({"width": width, "height": 900})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            return page

        try:
            yield open_page
        finally:
            context.close()
        assert errors == [], f"JavaScript errors on the page: {errors}"


def test_watch_a_cluster_render_lose_a_worker_and_submit_jobs(
    start_master, workers, browser
):
    from playwright.sync_api import expect

    running = start_master(lease_seconds=30.0, target_seconds=0.3)
    dashboard = Dashboard(running.master, "127.0.0.1", 0).start()
    try:
        victim = workers(running.port, name="victim")
        workers(running.port, name="survivor")
        page = browser(dashboard.url)

        victim_row = page.locator('#workers tr[data-name="victim"]')
        survivor_row = page.locator('#workers tr[data-name="survivor"]')
        expect(victim_row.locator(".status")).to_have_text("idle", timeout=WAIT_MS)
        expect(survivor_row.locator(".status")).to_have_text("idle", timeout=WAIT_MS)

        # Both have joined, so both get chunks the moment the job starts.
        job = running.master.submit(SPEC, running.master.folder_output(SPEC))
        running.wait_for(
            lambda: any(
                w.name == "victim" and w.chunks
                for w in running.master.scheduler.workers.values()
            ),
            what="the victim to hold a chunk",
        )
        os.killpg(victim.pid, signal.SIGKILL)
        expect(victim_row.locator(".status")).to_have_text("lost", timeout=WAIT_MS)
        why = victim_row.locator("xpath=following-sibling::tr[1]")
        # The kernel reports a killed peer as a reset or as an end of stream.
        expect(why).to_have_text(
            re.compile(r"lost at \d\d:\d\d:\d\d: connection (closed|lost)")
        )
        expect(survivor_row.locator(".status")).not_to_have_text("lost")

        expect(page.locator("#progress-text")).to_have_text("100%", timeout=WAIT_MS)
        assert job.status is JobStatus.DONE and job.requeued > 0
        canvas = page.locator("#preview")
        expect(canvas).to_have_attribute("data-done", str(job.grid.count))
        drawn = canvas.evaluate(COUNT_COLOURS)
        assert drawn["colours"] > 100 and drawn["background"] == 0, drawn
        expect(page.locator("#download")).to_be_visible(timeout=WAIT_MS)

        submit_through_the_form(page, expect)
        zoom_by_clicking_the_preview(page, expect, running)

        ARTIFACT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACT), full_page=True)
    finally:
        dashboard.close()


def submit_through_the_form(page, expect) -> None:
    for name, value in FORM.items():
        page.fill(f"#submit-form [name={name}]", value)
    page.fill("#submit-form [name=max_iter]", "800")
    page.select_option("#submit-form [name=palette]", "fire")
    page.click("#submit-form button[type=submit]")

    expect(page.locator("#submit-message")).to_have_text(
        f"job {FORM_SPEC.key()} submitted", timeout=WAIT_MS
    )
    item = page.locator(f'#jobs li[data-job="{FORM_SPEC.key()}"]')
    expect(item.locator(".status")).to_have_text("done", timeout=WAIT_MS)
    expect(item).to_contain_text("240\N{MULTIPLICATION SIGN}160 · centre -0.7453")
    expect(item).to_contain_text("fire")


def zoom_by_clicking_the_preview(page, expect, running) -> None:
    canvas = page.locator("#preview")
    expect(canvas).to_have_attribute("data-job", FORM_SPEC.key(), timeout=WAIT_MS)
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.25 * box["height"])

    # A quarter of the view right of and above the centre, a quarter as wide.
    view = FORM_SPEC.view
    aim = complex(
        view.center_re + 0.25 * view.span, view.center_im + 0.25 * view.height_span
    )
    running.wait_for(
        lambda: any(
            j.spec.view.span == view.span / 4
            and abs(complex(j.spec.view.center_re, j.spec.view.center_im) - aim)
            < 2 * view.pixel_size
            for j in running.master.scheduler.jobs.values()
        ),
        what="a job zoomed in where the preview was clicked",
    )
    expect(page.locator("#zoom-message")).to_contain_text("submitted", timeout=WAIT_MS)
    expect(page.locator("#job-params")).to_contain_text(
        f"span {view.span / 4}", timeout=WAIT_MS
    )
    expect(page.locator("#job-status .status")).to_have_text("done", timeout=WAIT_MS)


def test_page_escapes_names_needs_a_login_to_write_and_fits_a_phone(
    start_master, browser
):
    from playwright.sync_api import expect

    running = start_master(token="s3cret")
    hostile = "<img src=x onerror=alert(1)>"
    running.call(
        lambda: running.master.scheduler.register(
            hostile, "<b>host</b>", 1, running.master.clock()
        )
    )
    dashboard = Dashboard(running.master, "127.0.0.1", 0, token="s3cret").start()
    try:
        page = browser(dashboard.url, width=390)

        row = page.locator("#workers tbody tr").first
        expect(row.locator("td").first).to_contain_text(hostile, timeout=WAIT_MS)
        expect(row.locator("td").first).to_contain_text("<b>host</b>")
        assert page.locator("#workers img, #workers b").count() == 0
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"the page is {overflow} px wider than a phone"

        page.fill("#submit-form [name=size]", "64x48")
        page.click("#submit-form button[type=submit]")
        expect(page.locator("#submit-message")).to_contain_text("Log in first")
        assert running.master.scheduler.jobs == {}

        page.click("text=log in to submit and cancel")
        page.fill("input[name=token]", "s3cret")
        page.click("form[action='/login'] button[type=submit]")
        expect(page.locator("text=log out")).to_be_visible(timeout=WAIT_MS)
        page.fill("#submit-form [name=size]", "64x48")
        page.click("#submit-form button[type=submit]")
        expect(page.locator("#submit-message")).to_contain_text(
            "submitted", timeout=WAIT_MS
        )
        assert [j.spec.view.width for j in running.master.scheduler.jobs.values()] == [
            64
        ]
    finally:
        dashboard.close()
