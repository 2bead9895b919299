"""The config loader: file, environment and flags in that order; unknown keys named."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import Config, Secret, load_config
from server.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_config_toml_holds_exactly_the_defaults() -> None:
    """config.toml at the root equals the built-in defaults, key for key."""
    assert load_config(ROOT / "config.toml") == Config()


def test_environment_overrides_file_and_flags_override_both(tmp_path: Path) -> None:
    """FANOUT_<SECTION>_<KEY> beats the file; CLI overrides beat the environment."""
    path = tmp_path / "c.toml"
    path.write_text('[upstream]\nmodel = "from-file"\n[server]\nport = 9000\n')
    env = {"FANOUT_UPSTREAM_MODEL": "from-env", "FANOUT_SERVER_PORT": "9100"}
    config = load_config(path, env, {"server.port": 9200, "upstream.base_url": None})
    assert config.upstream.model == "from-env"
    assert config.server.port == 9200
    assert config.upstream.base_url == ""


@pytest.mark.parametrize(
    ("env", "attr", "expected"),
    [
        ({"FANOUT_UPSTREAM_INCLUDE_USAGE": "false"}, ("upstream", "include_usage"), False),
        ({"FANOUT_UPSTREAM_INCLUDE_USAGE": "YES"}, ("upstream", "include_usage"), True),
        ({"FANOUT_UPSTREAM_IDLE_TIMEOUT": "2.5"}, ("upstream", "idle_timeout"), 2.5),
        ({"FANOUT_ROOMS_MAX_ROOMS": "7"}, ("rooms", "max_rooms"), 7),
        ({}, ("upstream", "api"), "chat"),
        ({"FANOUT_UPSTREAM_API": "responses"}, ("upstream", "api"), "responses"),
        (
            {"FANOUT_UPSTREAM_API": "responses", "FANOUT_UPSTREAM_BACKGROUND": "true"},
            ("upstream", "background"),
            True,
        ),
        (
            {"FANOUT_SERVER_ALLOWED_ORIGINS": "https://a.example, https://b.example"},
            ("server", "allowed_origins"),
            ["https://a.example", "https://b.example"],
        ),
        (
            {"FANOUT_SERVER_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"},
            ("server", "trusted_proxies"),
            ["10.0.0.0/8", "192.0.2.7"],
        ),
        (
            {"FANOUT_SERVER_ALLOWED_HOSTS": "chat.example.com,::1"},
            ("server", "allowed_hosts"),
            ["chat.example.com", "::1"],
        ),
    ],
)
def test_environment_values_are_parsed_by_type(
    env: dict[str, str], attr: tuple[str, str], expected: object
) -> None:
    """Environment strings become the type of the key they override."""
    config = load_config(None, env)
    assert getattr(getattr(config, attr[0]), attr[1]) == expected


@pytest.mark.parametrize(
    ("text", "env", "overrides", "message"),
    [
        ("[upstream]\nmodle = 'x'\n", {}, {}, "upstream.modle"),
        ("[upstrem]\nmodel = 'x'\n", {}, {}, "upstrem"),
        ("[upstream]\napi_key = 'sk-x'\n", {}, {}, "secrets come only from the environment"),
        ("[server]\nport = 'eighty'\n", {}, {}, "server.port: expected int"),
        ("[upstream]\ninclude_usage = 1\n", {}, {}, "expected bool"),
        ("[rooms]\nmax_rooms = -1\n", {}, {}, "must not be negative"),
        ("[server]\nallowed_origins = [1]\n", {}, {}, "expected list"),
        ("", {"FANOUT_UPSTREAM_MODLE": "x"}, {}, "FANOUT_UPSTREAM_MODLE"),
        ("", {"FANOUT_NOPE": "x"}, {}, "FANOUT_NOPE"),
        ("", {"FANOUT_UPSTREAM_INCLUDE_USAGE": "maybe"}, {}, "expected true or false"),
        ("", {"FANOUT_SERVER_PORT": "80a"}, {}, "expected a number"),
        ("", {}, {"upstream.nope": 1}, "upstream.nope"),
        ("", {}, {"auth.mode": "magic"}, "auth.mode"),
        ("", {}, {"auth.mode": "token"}, "FANOUT_AUTH_SECRET"),
        ("", {"FANOUT_AUTH_SECRET": "short"}, {}, "at least 32 characters"),
        ("", {}, {"broker.url": "kafka://x"}, "broker.url"),
        ("", {}, {"server.log_level": "loud"}, "server.log_level"),
        ("", {}, {"server.port": 70000}, "server.port"),
        ("", {}, {"upstream.idle_timeout": 0.0}, "upstream.idle_timeout"),
        (
            "",
            {"FANOUT_UPSTREAM_API": "graphql"},
            {},
            "upstream.api: expected chat or responses, got 'graphql'",
        ),
        ("[upstream]\napi = 'Responses'\n", {}, {}, "upstream.api: expected chat or responses"),
        ("[upstream]\napi = 2\n", {}, {}, "upstream.api"),
        (
            "",
            {"FANOUT_UPSTREAM_BACKGROUND": "true"},
            {},
            "upstream.background: needs upstream.api = 'responses'",
        ),
        (
            "[upstream]\napi = 'responses'\nbackground = true\n",
            {},
            {"upstream.api": "chat"},
            "upstream.background: needs upstream.api = 'responses'",
        ),
        ("", {"FANOUT_SERVER_TRUSTED_PROXIES": "nginx"}, {}, "server.trusted_proxies"),
        ("", {"FANOUT_SERVER_ALLOWED_HOSTS": "a.example:443"}, {}, "server.allowed_hosts"),
        ("", {"FANOUT_SERVER_PROXY_HEADER": "x-real-ip"}, {}, "server.proxy_header"),
        ("", {}, {"server.sse_write_timeout_seconds": 0.0}, "server.sse_write_timeout_seconds"),
        ("not toml = = =", {}, {}, "c.toml"),
    ],
)
def test_bad_settings_are_errors_that_name_the_key(
    tmp_path: Path, text: str, env: dict[str, str], overrides: dict[str, object], message: str
) -> None:
    """Unknown keys, wrong types, secrets in files and bad values raise ConfigError naming them."""
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(path, env, overrides)


def test_secrets_come_from_the_environment_and_hide_in_reprs() -> None:
    """OPENAI_API_KEY and FANOUT_AUTH_SECRET are read, never shown, and decide demo mode."""
    secret = "s3" * 16
    config = load_config(None, {"OPENAI_API_KEY": "sk-live-123456", "FANOUT_AUTH_SECRET": secret})
    assert config.api_key is not None
    assert config.api_key.reveal() == "sk-live-123456"
    assert "sk-live" not in repr(config)
    assert str(Secret("x")) == "Secret('**********')"
    assert config.demo is False
    assert load_config(None, {}).demo is True
    assert load_config(None, {}, {"upstream.base_url": "http://127.0.0.1:1/v1"}).demo is False


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported, not ignored."""
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_config(tmp_path / "nope.toml")
