import secrets

import pytest

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
                                  ["--log-level", "LOUD"]])
def test_invalid_values_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        load_settings(argv, env={})


def test_every_setting_has_a_flag_documented_with_its_env_twin(capsys) -> None:
    with pytest.raises(SystemExit):
        load_settings(["--help"], env={})
    usage = capsys.readouterr().out
    for name in Settings.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in usage
        assert "CHAT_" + name.upper() in usage


def test_generated_tokens_are_never_read_as_flags() -> None:
    """The launcher passes its generated admin token as --admin-token=VALUE: a token that
    begins with "-" (about 1.5 % of them) must still be the value."""
    tokens = ["-starts-with-a-dash", "--looks-like-a-flag"]
    tokens += [secrets.token_urlsafe(24) for _ in range(1000)]
    for token in tokens:
        assert load_settings([f"--admin-token={token}"], {}).admin_token == token
