"""A real browser (Debian's headless Chromium, driven by Selenium through Debian's chromedriver)
sees every close code the server sends as a clean WebSocket close, directly and through the
gateway, and two tabs chat."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import websocket

from gateway.cluster import Cluster
from gateway.processes import LOOPBACK
from gateway.rolling import ClusterState, rolling_restart

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# As the machine's own probe starts it: no sandbox as root, nothing fetched from the network.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
PAGE = b"<!doctype html><meta charset=utf-8><title>close codes</title>"

if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    pytest.skip("Debian's chromium and chromium-driver are not installed "
                "(gateway/bootstrap.sh installs them as root)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402

# Opens window.ws on arguments[0], authenticates as arguments[1], and records every event; the
# callback gets auth_success (or the close, if it came first).
OPEN = """
const [url, name, done] = arguments;
const ws = new WebSocket(url);
window.ws = ws;
window.events = [];
window.wsClosed = new Promise(resolve => ws.onclose = e =>
    resolve({code: e.code, reason: e.reason, wasClean: e.wasClean}));
ws.onopen = () => ws.send(JSON.stringify({type: "auth", name}));
ws.onmessage = e => {
    const event = JSON.parse(e.data);
    window.events.push(event);
    if (event.type === "auth_success") done(event);
};
window.wsClosed.then(done);
"""
CLOSED = "arguments[0](await window.wsClosed);"  # the close the browser reports
NEXT = """
const [type, done] = arguments;
const poll = () => {
    const found = window.events.find(e => e.type === type);
    found ? done(found) : setTimeout(poll, 10);
};
poll();
"""


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    """A page served from loopback, as a site would serve its chat page."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the handler's name is http.server's)
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def tab(browser: Any, page_url: str) -> Iterator[Any]:
    """A fresh tab on the page for one test."""
    browser.switch_to.new_window("tab")
    browser.get(page_url)
    yield browser
    browser.close()
    browser.switch_to.window(browser.window_handles[0])


@pytest.fixture
def site(make_cluster, page_url: str):  # type: ignore[no-untyped-def]
    """Start clusters that let the test page's origin open chat sockets. The tabs are still
    open when a test's cluster stops: a grace of 1 s (not 5) for the names of the users it
    drains keeps that stop short."""
    origin = page_url.rstrip("/")

    def start(nodes: int = 1, node_args: tuple[str, ...] = ()) -> Cluster:
        return make_cluster(nodes=nodes, node_args=[f"--allowed-origins={origin}",
                                                    "--presence-grace=1", *node_args])

    return start


def _url(cluster: Cluster, via: str) -> str:
    return cluster.ws_url if via == "gateway" else cluster.node_ws_url(1)


def _open(tab: Any, url: str, name: str) -> None:
    answer = tab.execute_async_script(OPEN, url, name)
    assert answer.get("type") == "auth_success", answer


VIAS = ["direct", "gateway"]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("send, code", [
    ("window.ws.send('x'.repeat(70000))", 1009),  # over --max-frame (65,536 bytes)
    ("window.ws.send(new Uint8Array([1, 2, 3]))", 1003),
], ids=["message-too-big", "binary"])
def test_a_close_for_a_bad_frame_is_clean_with_its_code(
        site, tab, via: str, send: str, code: int) -> None:
    cluster = site()
    _open(tab, _url(cluster, via), "sender")
    tab.execute_script(send)
    closed = tab.execute_async_script(CLOSED)
    assert (closed["code"], closed["wasClean"]) == (code, True), closed


@pytest.mark.parametrize("via", VIAS)
def test_a_close_the_page_starts_is_clean(site, tab, via: str) -> None:
    cluster = site()
    _open(tab, _url(cluster, via), "leaver")
    tab.execute_script("window.ws.close(1000, 'bye')")
    closed = tab.execute_async_script(CLOSED)
    assert (closed["code"], closed["wasClean"]) == (1000, True), closed


@pytest.mark.parametrize("via", VIAS)
def test_server_shutdown_is_announced_then_closed_cleanly_with_1001(
        site, tab, via: str) -> None:
    cluster = site()
    _open(tab, _url(cluster, via), "stayer")
    cluster.nodes[0].process.send_signal(signal.SIGTERM)
    closed = tab.execute_async_script(CLOSED)
    assert (closed["code"], closed["wasClean"]) == (1001, True), closed
    assert tab.execute_async_script(NEXT, "server_shutdown")["reconnect"] is True


@pytest.mark.parametrize("via", VIAS)
def test_a_page_that_never_answers_pings_is_closed_cleanly_with_1000(
        site, tab, via: str) -> None:
    cluster = site(node_args=("--ping-interval", "0.2", "--ping-timeout", "0.5"))
    _open(tab, _url(cluster, via), "sleeper")
    closed = tab.execute_async_script(CLOSED)
    assert closed == {"code": 1000, "reason": "Ping timeout", "wasClean": True}


@pytest.mark.parametrize("via", VIAS)
def test_two_tabs_chat(site, browser: Any, page_url: str, via: str) -> None:
    cluster = site(nodes=2)
    tabs = []
    for name in ("alice", "bob"):
        browser.switch_to.new_window("tab")
        browser.get(page_url)
        url = _url(cluster, via) if name == "alice" else cluster.node_ws_url(2)
        _open(browser, url, name)
        browser.execute_script("window.ws.send(JSON.stringify({type: 'join', room: 'general'}))")
        browser.execute_async_script(NEXT, "room_joined")
        tabs.append(browser.current_window_handle)
    text = "héllo 👋 from alice"
    browser.switch_to.window(tabs[0])
    browser.execute_script(f"window.ws.send(JSON.stringify({json.dumps({'type': 'message', 'text': text})}))")
    for handle in reversed(tabs):
        browser.switch_to.window(handle)
        message = browser.execute_async_script(NEXT, "message")
        assert (message["user"], message["text"]) == ("alice", text)
    for handle in tabs:
        browser.switch_to.window(handle)
        browser.close()
    browser.switch_to.window(browser.window_handles[0])


@pytest.mark.parametrize("via", VIAS)
def test_a_page_from_an_origin_not_allowed_cannot_open_a_socket(make_cluster, tab, via: str
                                                                ) -> None:
    cluster = make_cluster(nodes=1)  # the test page's origin is not allowed
    answer = tab.execute_async_script(OPEN, _url(cluster, via), "intruder")
    assert answer["code"] == 1006 and not answer["wasClean"], answer  # the upgrade got 403


# --- the chat page (node/static), served by the nodes through the gateway --------------------

def _page_user(browser: Any, url: str, name: str) -> str:
    """A new tab on the chat page, connected as `name`; returns its window handle."""
    browser.switch_to.new_window("tab")
    browser.get(url)
    browser.find_element("id", "name").send_keys(name)
    browser.find_element("id", "connect").click()
    _until_online(browser)
    return str(browser.current_window_handle)


def _until_online(browser: Any) -> None:
    browser.execute_async_script("""
        const done = arguments[0];
        const poll = () => window.chat.state === "online" ? done() : setTimeout(poll, 20);
        poll();""")


def _say(browser: Any, handle: str, text: str) -> None:
    """Type and send, as a user would, once the page is online (in one turn of the page's
    event loop, so that it cannot go offline in between)."""
    browser.switch_to.window(handle)
    browser.execute_async_script("""
        const [text, done] = arguments;
        const poll = () => {
            if (window.chat.state !== "online") return setTimeout(poll, 20);
            document.getElementById("text").value = text;
            document.getElementById("send").requestSubmit();
            done();
        };
        poll();""", text)


def _shown(browser: Any, handle: str, count: int) -> list[dict[str, Any]]:
    """The messages the page shows, once it shows `count`."""
    browser.switch_to.window(handle)
    return list(browser.execute_async_script("""
        const [count, done] = arguments;
        const started = Date.now();
        const poll = () => window.chat.messages.length >= count || Date.now() - started > 10000
            ? done(window.chat.messages) : setTimeout(poll, 20);
        poll();""", count))


@pytest.mark.timeout(240)
def test_two_page_users_chat_through_a_rolling_restart(make_cluster, browser: Any) -> None:
    """Every message once, in seq order, in both tabs; no leave/join flap."""
    cluster = make_cluster(nodes=3, admin_token="page-test-token",
                           node_args=["--drain-window", "1", "--presence-grace", "5"])
    cluster.supervise_in_background()
    state = ClusterState(nodes=[cluster.node_url(i) for i in (1, 2, 3)],
                         admin_token="page-test-token")
    tabs = {name: _page_user(browser, cluster.http_url + "/", name) for name in ("ann", "ben")}
    restart = threading.Thread(target=rolling_restart, args=(state, lambda line: None))
    restart.start()
    sent: list[str] = []
    while restart.is_alive() or len(sent) < 10:
        for name, handle in tabs.items():
            sent.append(f"{name} {len(sent)}")
            _say(browser, handle, sent[-1])
        restart.join(0.2)
    for handle in tabs.values():
        messages = _shown(browser, handle, len(sent))
        assert [m["seq"] for m in messages] == list(range(1, len(sent) + 1)), (
            messages, browser.execute_script("return [...window.chat.pending.values()]"))
        assert sorted(m["text"] for m in messages) == sorted(sent)
        assert browser.execute_script("return window.chat.presence.length") <= 1, \
            "no leave/join flap: ben joining is the only presence event"
        assert browser.execute_script("return window.chat.connections") >= 2, \
            "every node was restarted: each page resumed at least once"


@contextlib.contextmanager
def _name_taken(url: str, name: str) -> Iterator[None]:
    """A new user named `name` (once its holder's hold has gone), connected meanwhile."""
    for _ in range(50):
        ws = websocket.create_connection(url, timeout=5)
        try:
            ws.send(json.dumps({"type": "auth", "name": name}))
            if json.loads(ws.recv())["type"] == "auth_success":
                yield
                return
        finally:
            ws.close()
        time.sleep(0.05)
    raise AssertionError(f"{name!r} stayed taken")


@pytest.mark.timeout(120)
def test_a_name_taken_while_away_lets_the_page_pick_another_and_resume(make_cluster,
                                                                       browser: Any) -> None:
    """The page's user drops; with no grace, somebody takes its name; the page's resume gets
    `name_taken` and waits for another name, then resumes as the same user in its room."""
    cluster = make_cluster(nodes=1, node_args=["--presence-grace", "0"])
    _page_user(browser, cluster.http_url + "/", "alice")
    user_id = browser.execute_script("return window.chat.userId")
    browser.execute_script("window.chat.ws.onclose = null; window.chat.ws.close();")
    with _name_taken(cluster.ws_url, "alice"):
        browser.execute_script("connect();")  # the page comes back, as after a drop
        browser.execute_async_script("""
            const done = arguments[0];
            const poll = () => window.chat.state === "name-taken" ? done() : setTimeout(poll, 20);
            poll();""")
        name = browser.find_element("id", "name")
        name.clear()
        name.send_keys("alice2")
        browser.find_element("id", "connect").click()
        _until_online(browser)
    assert browser.execute_script("return [window.chat.userId, window.chat.room]") == [
        user_id, "general"]


def _writer(url: str, name: str, texts: list[str]) -> None:
    """Another user says `texts` in general, each stored before the next."""
    ws = websocket.create_connection(url, timeout=5)
    try:
        for frame in ({"type": "auth", "name": name}, {"type": "join", "room": "general"}):
            ws.send(json.dumps(frame))
        for text in texts:
            ws.send(json.dumps({"type": "message", "text": text}))
            while json.loads(ws.recv()).get("text") != text:
                pass
    finally:
        ws.close()


def _page_seqs(browser: Any) -> list[int]:
    """The seqs the page shows, top to bottom."""
    return [int(seq) for seq in browser.execute_script(
        "return [...document.querySelectorAll('#log li[data-seq]')].map(li => li.dataset.seq)")]


@pytest.mark.timeout(120)
def test_the_page_pages_back_through_history_and_fills_a_resume_larger_than_a_reply(
        make_cluster, browser: Any) -> None:
    cluster = make_cluster(nodes=1, node_args=["--history-reply-bytes", "3000",
                                               "--max-text", "2000", "--join-burst", "50",
                                               "--presence-grace=1"])  # a short stop
    _writer(cluster.ws_url, "early", [f"{n} " + "p" * 1000 for n in range(1, 21)])
    _page_user(browser, cluster.http_url + "/", "reader")
    shown = _page_seqs(browser)
    assert shown == list(range(21 - len(shown), 21)) and len(shown) < 20
    while browser.execute_script("return !document.getElementById('earlier').hidden"):
        count = len(_page_seqs(browser))
        browser.find_element("css selector", "#earlier button").click()
        browser.execute_async_script("""
            const [count, done] = arguments;
            const poll = () => document.querySelectorAll('#log li[data-seq]').length > count
                || document.getElementById('earlier').hidden ? done() : setTimeout(poll, 20);
            poll();""", count)
    assert _page_seqs(browser) == list(range(1, 21)), "every message once, in order"
    browser.execute_script("window.chat.ws.onclose = null; window.chat.ws.close();")
    _writer(cluster.ws_url, "late", [f"{n} " + "q" * 1000 for n in range(21, 31)])
    browser.execute_script("connect();")  # the page comes back, as after a drop
    _shown(browser, str(browser.current_window_handle), 30)
    assert _page_seqs(browser) == list(range(1, 31)), "the gap paged in before the newest"
