"""Real browsers: Debian's headless Chromium (driven by Selenium through Debian's
chromedriver) sees every close code the server sends as a clean WebSocket close, directly and
through the gateway, and two tabs chat; Chromium and Firefox ESR (tests/firefox.py) chat on
the chat page (node/static, built on the SDK) through a rolling restart and a node killed
under them; a page from an origin the cluster does not allow cannot open a socket in either;
the page marks what is stale, pending and unread."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import websocket

from gateway.cluster import Cluster
from gateway.processes import LOOPBACK
from gateway.rolling import ClusterState, rolling_restart
from tests.docs_blocks import ROOT, blocks_run_by
from tests.firefox import FIREFOX, Firefox

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


@contextlib.contextmanager
def _site(files: dict[str, tuple[bytes, str]]) -> Iterator[str]:
    """A site on loopback serving `files` (path -> content and type); yields its URL."""

    class Site(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the handler's name is http.server's)
            content, kind = files.get(self.path.partition("?")[0], (b"", ""))
            self.send_response(200 if kind else 404)
            self.send_header("Content-Type", kind or "text/plain")
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    """A page served from loopback, as a site would serve its chat page."""
    with _site({"/": (PAGE, "text/html")}) as url:
        yield url


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


def test_a_page_from_an_origin_not_allowed_cannot_open_a_socket_in_firefox(
        make_cluster, firefox: Any, page_url: str) -> None:
    cluster = make_cluster(nodes=1)
    firefox.get(page_url)
    answer = firefox.execute_async_script(OPEN, cluster.ws_url, "intruder")
    assert answer["code"] == 1006 and not answer["wasClean"], answer
    allowed = make_cluster(nodes=1, node_args=[f"--allowed-origins={page_url.rstrip('/')}"])
    answer = firefox.execute_async_script(OPEN, allowed.ws_url, "welcome")
    assert answer["type"] == "auth_success", "from an allowed origin, the same page may"
    firefox.execute_script("window.ws.close()")


# --- the chat page (node/static), served by the nodes through the gateway --------------------

@dataclass
class PageUser:
    """A user of the chat page: a Chromium tab (its window handle) or the Firefox window."""

    driver: Any
    handle: str | None = None

    def __call__(self) -> Any:
        """The browser, on this user's page."""
        if self.handle is not None:
            self.driver.switch_to.window(self.handle)
        return self.driver

    def leave(self) -> None:
        """Close the tab (Chromium) or leave the page (Firefox): no socket outlives the test."""
        if self.handle is None:
            self.driver.get("about:blank")
            return
        self()
        self.driver.close()
        self.driver.switch_to.window(self.driver.window_handles[0])


@pytest.fixture(scope="module")
def firefox() -> Iterator[Any]:
    if not os.path.exists(FIREFOX):
        pytest.skip("Debian's firefox-esr is not installed (gateway/bootstrap.sh installs it)")
    browser = Firefox()
    try:
        yield browser
    finally:
        browser.quit()


def _page_user(driver: Any, url: str, name: str, tab: bool = True) -> PageUser:
    """`name` on the chat page (in a new tab of Chromium), connected and in its room."""
    if tab:
        driver.switch_to.new_window("tab")
    user = PageUser(driver, str(driver.current_window_handle) if tab else None)
    driver.get(url)
    driver.find_element("id", "name").send_keys(name)
    driver.find_element("id", "connect").click()
    _until(user, "window.chat.state === 'online' && window.chat.client.room !== null")
    return user


def _until(user: PageUser, condition: str) -> None:
    """Wait until the page's `condition` (a JavaScript expression) holds."""
    user().execute_async_script(f"""
        const done = arguments[arguments.length - 1];
        const poll = () => ({condition}) ? done() : setTimeout(poll, 20);
        poll();""")


def _say(user: PageUser, text: str) -> None:
    """Type and send, as a user would (offline too: the page queues it)."""
    user().execute_script("""
        document.getElementById("text").value = arguments[0];
        document.getElementById("send").requestSubmit();""", text)


def _shown(user: PageUser, count: int) -> list[dict[str, Any]]:
    """The messages the page shows, once it shows `count` (or after 10 s)."""
    return list(user().execute_async_script("""
        const [count, done] = arguments;
        const started = Date.now();
        const poll = () => window.chat.messages.length >= count || Date.now() - started > 10000
            ? done(window.chat.messages) : setTimeout(poll, 20);
        poll();""", count))


def _everything_once(users: list[PageUser], sent: list[str]) -> None:
    """Every user's page shows every message once, in seq order, none left pending."""
    for user in users:
        messages = _shown(user, len(sent))
        pending = user().execute_script("return window.chat.pending")
        assert [m["seq"] for m in messages] == list(range(1, len(sent) + 1)), (messages, pending)
        assert sorted(m["text"] for m in messages) == sorted(sent)
        assert pending == []


def _chat_while(users: list[PageUser], busy: threading.Thread, sent: list[str]) -> None:
    """The users take turns saying something until `busy` ends (and at least 10 times)."""
    while busy.is_alive() or len(sent) < 10:
        for user in users:
            sent.append(f"{user.handle or 'firefox'} {len(sent)}")
            _say(user, sent[-1])
        busy.join(0.2)


@pytest.mark.timeout(240)
def test_chromium_and_firefox_chat_through_a_rolling_restart(make_cluster, browser: Any,
                                                             firefox: Any) -> None:
    """Every message once, in seq order, in both browsers; no leave/join flap."""
    cluster = make_cluster(nodes=3, admin_token="page-test-token",
                           node_args=["--drain-window", "1", "--presence-grace", "5"])
    cluster.supervise_in_background()
    state = ClusterState(nodes=[cluster.node_url(i) for i in (1, 2, 3)],
                         admin_token="page-test-token")
    users = [_page_user(browser, cluster.http_url + "/", "ann"),
             _page_user(firefox, cluster.http_url + "/", "ben", tab=False)]
    try:
        restart = threading.Thread(target=rolling_restart, args=(state, lambda line: None))
        restart.start()
        sent: list[str] = []
        _chat_while(users, restart, sent)
        _everything_once(users, sent)
        for user in users:
            assert user().execute_script("return window.chat.presence.length") <= 1, \
                "no leave/join flap: ben joining is the only presence event"
            assert user().execute_script("return window.chat.connections") >= 2, \
                "every node was restarted: each page resumed at least once"
    finally:
        for user in users:
            user.leave()


@pytest.mark.timeout(120)
def test_a_node_killed_under_chromium_and_firefox_loses_nothing(make_cluster, browser: Any,
                                                                firefox: Any) -> None:
    """SIGKILL, no drain: the pages resume through the gateway on the other node, and what
    was in flight is sent again (same clientId) and stored once."""
    cluster = make_cluster(nodes=2, node_args=["--presence-grace=1"])
    users = [_page_user(browser, cluster.http_url + "/", "cleo"),
             _page_user(firefox, cluster.http_url + "/", "dan", tab=False)]
    try:
        node = users[0]().execute_script("return window.chat.client.node")
        victim = cluster.nodes[int(node.removeprefix("node")) - 1]
        kill = threading.Thread(target=lambda: (time.sleep(0.5), victim.process.kill()))
        kill.start()
        sent: list[str] = []
        _chat_while(users, kill, sent)
        _everything_once(users, sent)
        assert users[0]().execute_script("return window.chat.connections") >= 2
    finally:
        for user in users:
            user.leave()


@pytest.mark.timeout(120)
def test_unreachable_shows_stale_and_pending_then_catches_up(make_cluster, firefox: Any) -> None:
    """The only node dies: the member list and counts are marked stale (not frozen as if
    current), what the user writes shows as pending; the node comes back: the message is
    stored, shown once, and the marks go."""
    cluster = make_cluster(nodes=1, node_args=["--presence-grace=1"])
    user = _page_user(firefox, cluster.http_url + "/", "erin", tab=False)
    try:
        assert not user().execute_script("return document.getElementById('members-box')"
                                          ".classList.contains('stale')")
        node = cluster.nodes[0]
        node.process.kill()
        _until(user, "window.chat.state === 'reconnecting'")
        _say(user, "written offline")
        assert user().execute_script("""return [
            document.getElementById("members-box").classList.contains("stale"),
            !document.getElementById("stale-note").hidden,
            [...document.querySelectorAll("#outbox .pending")].map(li => li.textContent)]""") \
            == [True, True, ["written offline"]]
        cluster.nodes[0] = cluster.start_node(1, node.port)
        _until(user, "window.chat.state === 'online' && window.chat.pending.length === 0")
        assert [m["text"] for m in _shown(user, 1)] == ["written offline"]
        assert user().execute_script("""return [
            document.getElementById("members-box").classList.contains("stale"),
            document.querySelectorAll("#outbox .pending").length]""") == [False, 0]
    finally:
        user.leave()


def _click_room(user: PageUser, room: str) -> None:
    user().execute_async_script("""
        const [room, done] = arguments;
        const poll = () => {
            const button = [...document.querySelectorAll("#rooms button")]
                .find(b => b.textContent.startsWith(room + " "));
            if (!button) return setTimeout(poll, 20);
            button.click();
            done();
        };
        poll();""", room)


@pytest.mark.timeout(120)
def test_a_room_left_and_come_back_to_marks_what_is_new(make_cluster, firefox: Any) -> None:
    cluster = make_cluster(nodes=1, node_args=["--presence-grace=1"])
    elsewhere = websocket.create_connection(cluster.ws_url, timeout=5)  # keeps "other" listed
    try:
        for frame in ({"type": "auth", "name": "fay"}, {"type": "join", "room": "other"}):
            elsewhere.send(json.dumps(frame))
        user = _page_user(firefox, cluster.http_url + "/", "gus", tab=False)
        _writer(cluster.ws_url, "hal", ["seen"])
        _shown(user, 1)
        _click_room(user, "other")
        _until(user, "window.chat.client.room === 'other' && window.chat.state === 'online'")
        _writer(cluster.ws_url, "ida", ["new 1", "new 2"])
        _click_room(user, "general")
        _until(user, "window.chat.client.room === 'general' && window.chat.messages.length >= 3")
        assert user().execute_script("""return [
            document.getElementById("unread")?.textContent,
            document.getElementById("unread")?.nextElementSibling.dataset.seq,
            document.querySelector("#rooms button.unread")?.textContent.startsWith("general"),
            document.title]""") == ["2 new", "2", True, "(2) Chat"]
        _say(user, "read them")  # who writes has read what came before
        _until(user, "!document.getElementById('unread')")
        assert user().execute_script("return document.title") == "Chat"
    finally:
        elsewhere.close()
        user.leave()


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


# The page drops its connection and does not come back until _COME_BACK.
_HOLD_OFF = "const c = window.chat.client; c.retryAfterMs = 600000; c.drop('the test');"
_COME_BACK = "const c = window.chat.client; clearTimeout(c.timers.reconnect); c.open();"


@pytest.mark.timeout(120)
def test_a_name_taken_while_away_lets_the_page_pick_another_and_resume(make_cluster,
                                                                       browser: Any) -> None:
    """The page's user drops; with no grace, somebody takes its name; the page's resume gets
    `name_taken` and waits for another name, then resumes as the same user in its room."""
    cluster = make_cluster(nodes=1, node_args=["--presence-grace", "0"])
    user = _page_user(browser, cluster.http_url + "/", "alice")
    user_id = browser.execute_script("return window.chat.userId")
    browser.execute_script(_HOLD_OFF)
    with _name_taken(cluster.ws_url, "alice"):
        browser.execute_script(_COME_BACK)
        _until(user, "window.chat.state === 'name-taken'")
        name = browser.find_element("id", "name")
        name.clear()
        name.send_keys("alice2")
        browser.find_element("id", "connect").click()
        _until(user, "window.chat.state === 'online'")
    assert browser.execute_script("return [window.chat.userId, window.chat.client.room]") == [
        user_id, "general"]
    user.leave()


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
    user = _page_user(browser, cluster.http_url + "/", "reader")
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
    browser.execute_script(_HOLD_OFF)
    _writer(cluster.ws_url, "late", [f"{n} " + "q" * 1000 for n in range(21, 31)])
    browser.execute_script(_COME_BACK)
    _shown(user, 30)
    assert _page_seqs(browser) == list(range(1, 31)), "the gap paged in before the newest"
    user.leave()


@pytest.mark.timeout(60)
def test_the_documented_example_page_chats(make_cluster, firefox: Any) -> None:
    """docs/client-js.md's page, as written, beside chat-client.js on a site of its own."""
    page, = blocks_run_by("tests/integration/test_browsers.py")
    assert page.language == "html"
    sdk = (ROOT / "node" / "static" / "chat-client.js").read_bytes()
    with _site({"/page.html": (page.text.encode(), "text/html"),
                "/chat-client.js": (sdk, "text/javascript")}) as site:
        cluster = make_cluster(nodes=1, node_args=[f"--allowed-origins={site.rstrip('/')}",
                                                   "--presence-grace=1"])
        query = urllib.parse.urlencode({"url": cluster.ws_url, "name": "pat"})
        firefox.get(f"{site}page.html?{query}")
        user = PageUser(firefox)
        try:
            _until(user, "document.getElementById('state').textContent === 'online'"
                         " && document.title === 'Chat (1 here)'")
            firefox.find_element("id", "text").send_keys("hi from the example")
            firefox.execute_script("document.getElementById('say').requestSubmit()")
            _until(user, "document.getElementById('log').textContent"
                         " === 'pat: hi from the example'")
        finally:
            user.leave()
