import socket

import pytest

from gateway.tokens import new_secret

from node.config import Settings, load_settings


def test_defaults_match_the_documented_ones() -> None:
    settings = load_settings([], env={})
    assert (settings.host, settings.port, settings.redis_url) == ("127.0.0.1", 8000, None)
    assert (settings.ping_interval, settings.ping_timeout) == (30.0, 60.0)
    assert (settings.rate, settings.burst, settings.max_text, settings.max_frame) == (
        10.0, 20, 10000, 65536)
    assert (settings.history, settings.shutdown_timeout) == (100, 10.0)
    assert settings.embedded


def test_environment_twins_set_values_and_flags_win() -> None:
    env = {"CHAT_PORT": "9001", "CHAT_RATE": "2.5", "CHAT_NODE_ID": "from-env",
           "CHAT_REDIS_URL": "redis://127.0.0.1:1/0"}
    settings = load_settings(["--port", "9002"], env=env)
    assert settings.port == 9002
    assert settings.rate == 2.5
    assert settings.node_id == "from-env"
    assert not settings.embedded


@pytest.mark.parametrize("argv", [["--burst", "0"], ["--max-frame", "-1"], ["--port", "x"],
                                  ["--log-level", "LOUD"], ["--redis-prefix", "a{b}"],
                                  ["--redis-prefix", ""], ["--redis-cluster"],
                                  ["--presence-limit", "0"], ["--presence-interval", "0"],
                                  ["--write-delay", "-0.01"], ["--write-delay", "1.01"],
                                  ["--busy-rate", "0"], ["--history-reply-bytes", "0"],
                                  ["--history-cache-bytes", "0"]])
def test_invalid_values_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        load_settings(argv, env={})


def test_the_smallest_history_byte_bounds_are_taken() -> None:
    settings = load_settings(["--history-reply-bytes", "1", "--history-cache-bytes", "1"],
                             env={})
    assert (settings.history_reply_bytes, settings.history_cache_bytes) == (1, 1)


@pytest.mark.parametrize("delay", ["0", "1"])
def test_a_write_delay_from_none_to_a_second_is_taken(delay: str) -> None:
    assert load_settings(["--write-delay", delay], env={}).write_delay == float(delay)


def test_a_client_is_busy_past_fifty_events_a_second_and_then_written_every_50_ms() -> None:
    settings = load_settings([], env={})
    assert (settings.busy_rate, settings.write_delay) == (50.0, 0.05)
    assert load_settings([], env={"CHAT_BUSY_RATE": "0.5"}).busy_rate == 0.5


def test_the_presence_limit_is_a_flag_or_a_variable() -> None:
    assert load_settings(["--presence-limit", "1"], env={}).presence_limit == 1
    assert load_settings([], env={"CHAT_PRESENCE_LIMIT": "5000"}).presence_limit == 5000
    assert load_settings([], env={}).presence_limit == 1000


def test_cluster_mode_is_a_flag_or_a_variable_beside_a_redis_url() -> None:
    url = ["--redis-url", "redis://127.0.0.1:7000/0"]
    assert load_settings([*url, "--redis-cluster"], env={}).redis_cluster
    assert load_settings(url, env={"CHAT_REDIS_CLUSTER": "1"}).redis_cluster
    assert not load_settings(url, env={}).redis_cluster


def test_every_setting_has_a_flag_documented_with_its_env_twin(capsys) -> None:
    with pytest.raises(SystemExit):
        load_settings(["--help"], env={})
    usage = capsys.readouterr().out
    for name in Settings.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in usage
        assert "CHAT_" + name.upper() in usage


def test_generated_tokens_reach_the_node_intact_from_the_environment_or_a_file(tmp_path) -> None:
    """The launcher hands its generated admin token over in CHAT_ADMIN_TOKEN: nothing a
    draw can produce (about 1.5 % begin with "-") is read as anything but the token."""
    tokens = ["-starts-with-a-dash", "--looks-like-a-flag"]
    tokens += [new_secret() for _ in range(300)]  # about 4 of them begin with "-"
    path = tmp_path / "token"
    for token in tokens:
        assert load_settings([], {"CHAT_ADMIN_TOKEN": token}).admin_token == token
        path.write_text(token + "\n")
        assert load_settings([f"--admin-token-file={path}"], {}).admin_token == token


def test_a_secret_has_no_command_line_flag_of_its_own() -> None:
    with pytest.raises(SystemExit):
        load_settings(["--admin-token", "visible-to-ps"], {})


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_secret_file_is_refused(tmp_path, content: str | None) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit):
        load_settings([f"--admin-token-file={path}"], {})


def test_the_default_node_id_tells_no_process_id() -> None:
    first, second = load_settings([], env={}), load_settings([], env={})
    host, _, suffix = first.node_id.rpartition("-")
    assert host == socket.gethostname() and len(suffix) == 8 and int(suffix, 16) >= 0
    assert first.node_id != second.node_id  # random, not the pid


def test_the_server_api_needs_keys_from_the_environment_or_a_file(tmp_path) -> None:
    keys = "publish:publish-key-0123456789\nadmin:admin-key-0123456789"
    path = tmp_path / "keys"
    path.write_text(keys)
    for settings in (load_settings(["--api-listen", "127.0.0.1:8001"], {"CHAT_API_KEYS": keys}),
                     load_settings(["--api-listen=[::1]:8001", f"--api-keys-file={path}"], {})):
        assert settings.api_keys == keys
    with pytest.raises(SystemExit):
        load_settings(["--api-listen", "127.0.0.1:8001"], {})  # no key: no API
    with pytest.raises(SystemExit):
        load_settings(["--api-keys", keys], {})  # never on argv, where `ps` shows it
    for listen in ("8001", "host:", "host:70000", ":8001"):
        with pytest.raises(SystemExit):
            load_settings(["--api-listen", listen], {"CHAT_API_KEYS": keys})
    assert load_settings([], {"CHAT_API_LISTEN": "", "CHAT_API_KEYS": ""}).api_listen == ""


@pytest.mark.parametrize("keys", ["admin:short", "root:admin-key-0123456789",
                                  "admin-key-0123456789", "admin:with space in the key", ",",
                                  "admin:" + "k" * 257])
def test_api_keys_are_a_known_scope_and_16_to_256_printable_characters(keys: str) -> None:
    with pytest.raises(SystemExit):
        load_settings([], {"CHAT_API_KEYS": keys})
