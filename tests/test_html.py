"""The HTML pages in a real browser (headless Chromium): no console errors, the findings and every plot render
with non-empty boxes, a table sorts when its header is clicked, and a screenshot is not blank."""

import os
import shutil

import pytest

from bench.report.html import compare_page, index_page, run_page
from tests.handmade import BASE, FASTER, SLOWER, pair, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="no chromium here (.ci/run installs it)"
)


def _records():
    return (pair("vgg11", 2, BASE, FASTER, "a", cpu_util_cores=1.9) + pair("vgg11", 8, BASE, SLOWER, "b")
            + pair("resnet20_cifar", 2, BASE, BASE, "c"))  # fmt: skip


def _pages(tmp_path):
    records = _records()
    run = write_run(tmp_path / "results" / "runs" / "20261201-cpu", records)
    (run / "report.html").write_text(run_page(records, {"cpu_model": "Test CPU", "cpu_cores": 2}, "Report"))
    (tmp_path / "results" / "index.html").write_text(index_page(tmp_path / "results"))
    (tmp_path / "compare.html").write_text(compare_page("# Comparison\n", "Compare", records[:2], records[2:4]))
    return {"report": run / "report.html", "index": tmp_path / "results" / "index.html",
            "compare": tmp_path / "compare.html"}  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "chromium is not installed"
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )  # fmt: skip
        yield chromium
        chromium.close()


def _open(browser, path):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests = []
    page.on("request", lambda request: requests.append(request.url) if not request.url.startswith("file:") else None)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, errors, requests


def _not_blank(png: bytes) -> bool:
    import io

    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    return float(pixels.std()) > 0.01


def test_the_report_renders_findings_and_plots_and_sorts(tmp_path, browser):
    pages = _pages(tmp_path)
    page, errors, requests = _open(browser, pages["report"])
    findings = page.locator("ul.findings li")
    assert findings.count() >= 2 and "faster than torch" in findings.first.inner_text()
    plots = page.locator("svg.plot")
    assert plots.count() == 1
    for index in range(plots.count()):
        box = plots.nth(index).bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100
    column = "table.records tbody tr td:nth-child(8)"  # img/s
    page.locator("table.records th").nth(7).click()
    values = [float(v.get_attribute("data-sort")) for v in page.locator(column).all()]
    assert values == sorted(values)
    page.locator("table.records th").nth(7).click()
    values = [float(v.get_attribute("data-sort")) for v in page.locator(column).all()]
    assert values == sorted(values, reverse=True)
    assert _not_blank(page.screenshot(full_page=True))
    assert errors == [] and requests == []


@pytest.mark.parametrize("name", ["index", "compare"])
def test_the_index_and_compare_pages_render_without_errors(tmp_path, browser, name):
    page, errors, requests = _open(browser, _pages(tmp_path)[name])
    assert page.locator("h1").count() == 1 and _not_blank(page.screenshot())
    if name == "index":
        assert "20261201-cpu" in page.locator("table.runs").inner_text()
        assert "faster than torch" in page.locator("table.runs").inner_text()
    else:
        box = page.locator("svg.plot").bounding_box()
        assert box and box["width"] > 100
    assert errors == [] and requests == []
