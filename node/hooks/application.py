"""The publish and connect hooks: the node asks the application's backend, signed, before it
accepts a client's message or `auth` (docs/hooks.md). Bounded in time and in calls at once
(node.hooks.caller); a hook that fails decides by the configured policy."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec

from node.hooks.caller import Caller, HookFailed
from node.hooks.wire import Answer, ConnectCheck, MessageCheck, decode_answer, encode

log = logging.getLogger("node.hooks")


@dataclass(frozen=True, slots=True)
class HookSettings:
    """The part of the node's settings the hooks use."""

    publish_url: str | None
    connect_url: str | None
    timeout: float  # seconds a call may take, its wait for a free slot included
    accept_on_failure: bool  # a failed publish hook lets the message through unchecked


class Rejected(Exception):
    """The application said no: `code` and `reason` go to the client."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class HookUnavailable(Exception):
    """The hook gave no usable answer, and the policy refuses what it was asked about."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """The connect hook's accept: the identity to use (None: the node's own choice), and
    the only rooms the user may join (None: any)."""

    user_id: str | None
    name: str | None
    rooms: frozenset[str] | None


class ApplicationHooks:
    """Asks the configured hooks; without a URL a check accepts at once."""

    def __init__(self, caller: Caller | None, settings: HookSettings) -> None:
        self._caller = caller
        self._settings = settings

    @property
    def checks_messages(self) -> bool:
        return self._settings.publish_url is not None

    @property
    def checks_connects(self) -> bool:
        return self._settings.connect_url is not None

    async def check_message(self, check: MessageCheck) -> str:
        """The text to publish (the client's, or the application's replacement); raises
        Rejected, or HookUnavailable when the hook failed and the policy is reject."""
        url = self._settings.publish_url
        if url is None:
            return check.text
        try:
            answer = await self._ask("publish", url, encode(check))
        except HookUnavailable:
            if self._settings.accept_on_failure:
                return check.text
            raise
        if answer.result == "reject":
            raise Rejected(answer.code, answer.reason)
        if answer.result == "replace":
            if not answer.text:
                assert self._caller is not None
                self._caller.failures[("publish", "bad_answer")] += 1
                raise HookUnavailable("the publish hook replaced the text with none")
            return answer.text
        return check.text

    async def check_connect(self, check: ConnectCheck) -> Admitted:
        """Who the client may be; raises Rejected, or HookUnavailable when the hook failed
        (a connect hook that fails lets nobody in)."""
        url = self._settings.connect_url
        if url is None:
            return Admitted(None, None, None)
        answer = await self._ask("connect", url, encode(check))
        if answer.result != "accept":
            raise Rejected(answer.code, answer.reason)
        return Admitted(answer.user_id, answer.name,
                        None if answer.rooms is None else frozenset(answer.rooms))

    async def _ask(self, hook: str, url: str, body: bytes) -> Answer:
        assert self._caller is not None, "load_settings refuses hooks without the secret"
        try:
            raw = await self._caller.ask(hook, url, body, self._settings.timeout)
        except HookFailed as failed:
            log.warning("%s hook failed: %s", hook, failed)
            raise HookUnavailable(str(failed)) from None
        try:
            return decode_answer(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as bad:
            self._caller.failures[(hook, "bad_answer")] += 1
            log.warning("%s hook answered what the contract does not allow: %s", hook, bad)
            raise HookUnavailable(f"a bad answer: {bad}") from None
