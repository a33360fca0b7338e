"""The web console in a real browser (headless Chromium over DevTools), against a
real server with tokens on: every page loads without a console error, paging
works, the live tail shows an event appended during the test. A screenshot of each
page goes to ``$HYDRA_SCREENSHOTS`` (default: this test's temp directory)."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hydra._tokens import add_token
from tests._browser import CHROMIUM, Browser
from tests.gateway._cluster import Cluster

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} is not installed (Debian package `chromium`; .ci/run installs it "
           "when it runs as root with apt-get)")


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    cluster = Cluster(workers=1, HYDRA_LOG_LEVEL="warning")
    tokens = os.path.join(cluster.root, "tokens")
    cluster.tokens = {role: add_token(tokens, f"console-{role}", role)  # type: ignore[attr-defined]
                      for role in ("read", "write")}
    cluster.env["HYDRA_TOKENS_FILE"] = tokens
    cluster.headers = {"authorization": f"Bearer {cluster.tokens['write']}"}  # type: ignore[attr-defined]
    cluster.start()
    yield cluster
    cluster.stop()
    assert not cluster.left_over, f"processes left behind: {cluster.left_over}"


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    try:
        b.connect()
        b.call("Runtime.enable")
        b.call("Log.enable")
        b.call("Page.enable")
        b.call("Emulation.setDeviceMetricsOverride", width=1280, height=1000,
               deviceScaleFactor=1, mobile=False)
        yield b
    finally:
        b.close()


def _errors(browser: Browser) -> list[str]:
    """Console errors, uncaught exceptions and failed loads the page logged so far."""
    browser.evaluate("1")  # collect the events that arrived meanwhile
    out = []
    for e in browser.events:
        method, params = e["method"], e.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(json.dumps(params.get("args"))[:500])
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            out.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
    return out


def _wait(browser: Browser, expression: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = browser.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            notice = browser.evaluate("document.getElementById('notice').textContent")
            raise AssertionError(f"timed out waiting for {expression} (notice: {notice!r})")
        time.sleep(0.05)


def _go(browser: Browser, hash_: str, page: str) -> None:
    browser.evaluate(f"location.hash = {json.dumps(hash_)}")
    _wait(browser, f"document.body.dataset.ready === {json.dumps(page)}")


def _click(browser: Browser, selector: str, page: str) -> None:
    browser.evaluate("delete document.body.dataset.ready; "
                     f"document.querySelector({json.dumps(selector)}).click()")
    _wait(browser, f"document.body.dataset.ready === {json.dumps(page)}")


def _shot(browser: Browser, folder: str, name: str) -> None:
    png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    with open(os.path.join(folder, f"{name}.png"), "wb") as f:
        f.write(png)


def _texts(browser: Browser, selector: str) -> list[str]:
    return browser.evaluate(
        f"Array.from(document.querySelectorAll({json.dumps(selector)}), n => n.textContent)")


def _append(http: httpx.Client, stream: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    r = http.post(f"/streams/{stream}", json={"events": events, "expectedVersion": -1})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_console_pages(server: Cluster, browser: Browser, tmp_path) -> None:
    shots = os.environ.get("HYDRA_SCREENSHOTS") or str(tmp_path / "screenshots")
    os.makedirs(shots, exist_ok=True)
    run = uuid.uuid4().hex[:6]
    prefix = f"console-{run}-"
    with httpx.Client(base_url=server.http_url, headers=server.headers, timeout=10) as http:
        for i in range(30):
            _append(http, f"{prefix}{i:02d}", [{"data": _b64(b'{"n": %d}' % i)}])
        long = f"{prefix}long"
        _append(http, long, [{"data": _b64(json.dumps({"amount": v, "tags": ["a", "b"]}).encode()),
                              "eventType": "Deposited", "eventId": f"e-{v}",
                              "metadata": _b64(b'{"user": "ann"}')} for v in range(60)])
        binary = _append(http, f"{prefix}bin", [{"data": _b64(bytes(range(250, 256)) + b"\x00ab"),
                                                 "eventType": "Blob"}])

        # The token is in the tab's storage before the console starts, as if the user
        # had typed it, so that no page meets a refusal (tested at the end).
        token = json.dumps(server.tokens["read"])  # type: ignore[attr-defined]
        browser.call("Page.addScriptToEvaluateOnNewDocument",
                     source=f"sessionStorage.setItem('hydra-console-token', {token})")
        browser.call("Page.navigate", url=f"{server.http_url}/ui/#/streams")
        _wait(browser, "document.body.dataset.ready === 'streams'")
        assert "streams" in (_wait(browser, "document.getElementById('totals').textContent"))
        _shot(browser, shots, "1-streams")

        # Streams by prefix, two pages.
        browser.evaluate(f"document.getElementById('prefix').value = {json.dumps(prefix)}")
        _click(browser, "form.toolbar button[type=submit]", "streams")
        first = _texts(browser, "#streams tbody td:first-child")
        assert first == sorted(first) and len(first) == 25
        assert first[0] == f"{prefix}00"
        _click(browser, "#next-page", "streams")
        second = _texts(browser, "#streams tbody td:first-child")
        assert second == [f"{prefix}{i:02d}" for i in range(25, 30)] + [f"{prefix}bin",
                                                                        f"{prefix}long"]
        assert browser.evaluate("document.getElementById('next-page').disabled")
        counts = _texts(browser, "#streams tbody td:nth-child(2)")
        assert counts[-1] == "60"
        _shot(browser, shots, "2-streams-by-prefix")

        # One stream, paged backward and forward.
        _go(browser, f"#/stream/{long}", "stream")
        versions = _texts(browser, "#events .event .head b")
        assert browser.evaluate("document.querySelectorAll('#events .event').length") == 25
        assert "59" in versions[0]
        data = _texts(browser, "#events pre.data")[0]
        assert '"amount": 59' in data and "\n" in data  # pretty-printed
        assert '"user": "ann"' in _texts(browser, "#events pre.metadata")[0]
        _shot(browser, shots, "3-stream")
        _click(browser, ".pager .older", "stream")
        assert _texts(browser, "#events pre.data")[0].count('"amount": 34') == 1
        _click(browser, ".pager .older", "stream")
        assert _texts(browser, "#events pre.data")[-1].count('"amount": 0') == 1
        assert browser.evaluate("document.querySelector('.pager .older').disabled")
        _click(browser, ".pager .newer", "stream")
        assert '"amount": 34' in _texts(browser, "#events pre.data")[0]
        _click(browser, ".pager .newer", "stream")
        assert '"amount": 59' in _texts(browser, "#events pre.data")[0]
        assert browser.evaluate("document.querySelector('.pager .newer').disabled")

        # One event: non-JSON data as hex.
        _go(browser, f"#/event/{binary['position']}", "event")
        hexdump = _texts(browser, "pre.data")[0]
        assert "fa fb fc fd fe ff 00 61 62" in hexdump
        _shot(browser, shots, "4-event")

        # $all with the live tail: an event appended now shows up.
        _go(browser, "#/all", "all")
        assert browser.evaluate("document.querySelectorAll('#events .event').length") == 25
        live = _append(http, f"{prefix}live", [{"data": _b64(b'{"live": true}')}])
        _wait(browser, f"!!document.querySelector('#events .event[data-position=\"{live['position']}\"]')")
        assert browser.evaluate("document.querySelector('#events .event').dataset.position") \
            == str(live["position"])
        _shot(browser, shots, "5-all-live")
        _click(browser, "button.older", "all")
        assert browser.evaluate("document.querySelectorAll('#events .event').length") == 25

        # The server page: cards and the charts once samples came in.
        _go(browser, "#/server", "server")
        cards = " ".join(_texts(browser, "#server-cards .card"))
        assert "Committed position" in cards and "Subscribers" in cards and "Version" in cards
        for i in range(20):  # something to chart
            _append(http, f"{prefix}load", [{"data": _b64(b"{}")}] * 5)
        _wait(browser, "document.querySelectorAll('#charts polyline').length === 2", timeout=12)
        _shot(browser, shots, "6-server")

        assert _errors(browser) == []

        # Without the token the console says what is missing.
        browser.evaluate("document.getElementById('token-clear').click()")
        _go(browser, "#/streams", "streams")
        _wait(browser, "!document.getElementById('notice').hidden")
        assert "token" in browser.evaluate("document.getElementById('notice').textContent")
    assert sorted(os.listdir(shots)) == ["1-streams.png", "2-streams-by-prefix.png",
                                         "3-stream.png", "4-event.png", "5-all-live.png",
                                         "6-server.png"]
    print(f"console screenshots in {shots}")


def test_console_files_are_public_with_a_strict_policy(server: Cluster) -> None:
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        r = http.get("/ui", follow_redirects=False)
        assert r.status_code == 308 and r.headers["location"] == "/ui/"
        r = http.get("/ui/")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert http.get("/ui/console.js").status_code == 200
        assert http.get("/ui/nothing.js").status_code == 404
        assert http.get("/streams").status_code == 401  # the API itself is not public
