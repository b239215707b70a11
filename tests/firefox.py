"""Debian's Firefox ESR, headless, driven over Marionette (its own remote protocol: Debian
has no geckodriver), with the few calls the browser tests make on Selenium's Chromium too:
`get`, `execute_script`, `execute_async_script` (the callback is the last argument, as in
WebDriver), `find_element` and `quit`. Scripts run in the page's own scope (no sandbox), so
that they see what the page defines (`window.chat`). The profile lives in a temporary folder
and goes with the process group `quit` stops; nothing leaves loopback (a proxy that refuses
every non-local address)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from marionette_driver.marionette import Marionette

from gateway.processes import LOOPBACK, free_port

FIREFOX = "/usr/bin/firefox-esr"
SCRIPT_TIMEOUT_MS = 15000
STARTUP_TIMEOUT = 60.0
PREFERENCES = {
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "app.update.disabledForTesting": True,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "network.proxy.type": 1,  # manual: every address but loopback goes to a closed port
    "network.proxy.http": "127.0.0.1",
    "network.proxy.http_port": 1,
    "network.proxy.ssl": "127.0.0.1",
    "network.proxy.ssl_port": 1,
    "network.proxy.no_proxies_on": "localhost, 127.0.0.1",
    "network.proxy.allow_hijacking_localhost": False,
}


class Firefox:
    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="firefox-profile-")
        port = free_port()
        prefs = PREFERENCES | {"marionette.port": port}
        with open(os.path.join(self.profile, "user.js"), "w") as user_js:
            for name, value in prefs.items():
                user_js.write(f"user_pref({name!r}, {_js(value)});\n")
        self.process = subprocess.Popen(
            [FIREFOX, "--headless", "--marionette", "--no-remote", "--profile", self.profile],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            self.wait_for(port)
            self.client = Marionette(host=LOOPBACK, port=port)
            self.client.start_session()
            self.client.timeout.script = SCRIPT_TIMEOUT_MS / 1000
        except BaseException:
            self.quit()
            raise

    def wait_for(self, port: int) -> None:
        """Until Marionette listens (Marionette's own wait leaks a socket per try)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{FIREFOX} exited with {self.process.returncode}")
            try:
                with socket.create_connection((LOOPBACK, port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"Marionette did not listen on port {port} within {STARTUP_TIMEOUT} s")

    def get(self, url: str) -> None:
        self.client.navigate(url)

    def execute_script(self, script: str, *args: Any) -> Any:
        return self.client.execute_script(script, script_args=list(args), sandbox=None)

    def execute_async_script(self, script: str, *args: Any) -> Any:
        return self.client.execute_async_script(script, script_args=list(args), sandbox=None,
                                                script_timeout=SCRIPT_TIMEOUT_MS)

    def find_element(self, by: str, value: str) -> Any:
        return self.client.find_element(by, value)

    def quit(self) -> None:
        """Stop the browser (its whole process group) and remove its profile."""
        client = getattr(self, "client", None)
        if client is not None and client.session is not None:
            try:
                client.delete_session()
            except Exception:  # the browser is stopped below either way
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


def _js(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)
