"""Configuration.

Config.toml defaults, ``FANOUT_<SECTION>_<KEY>`` environment overrides, CLI flags over both. Unknown
keys are errors that name them; secrets come only from the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from server.core.errors import ConfigError
from server.core.origins import host_name
from server.core.room_limits import RoomLimits
from server.core.types import UpstreamApi


class Secret:
    """A string that never shows itself in a repr, a log line or an error."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """[server]: where and how the server listens."""

    host: str = "127.0.0.1"
    port: int = 8080
    allowed_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)
    trusted_proxies: list[str] = field(default_factory=list)
    proxy_header: str = "x-forwarded-for"
    log_level: str = "info"
    log_format: str = "text"
    heartbeat_seconds: float = 30.0
    sse_keepalive_seconds: float = 15.0
    sse_write_timeout_seconds: float = 10.0
    shutdown_grace_seconds: float = 5.0
    idle_timeout_seconds: float = 15.0


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """[upstream]: the OpenAI-compatible endpoint every turn streams from."""

    base_url: str = ""
    api: UpstreamApi = "chat"
    background: bool = False
    model: str = "gpt-4o-mini"
    system_prompt: str = "You are a helpful assistant."
    connect_timeout: float = 10.0
    idle_timeout: float = 60.0
    total_timeout: float = 600.0
    include_usage: bool = True
    max_retries: int = 2
    max_line_bytes: int = 8 * 1024 * 1024
    demo_tokens_per_second: float = 40.0
    demo_ttft: float = 0.3


@dataclass(frozen=True, slots=True)
class RoomsConfig:
    """[rooms]: how much each room remembers and how many there may be."""

    retained_events: int = 10_000
    snapshot_turns: int = 20
    history_turns: int = 10
    max_room_bytes: int = 16 * 1024 * 1024
    history_bytes: int = 256 * 1024
    idle_forget_seconds: float = 3600.0
    empty_forget_seconds: float = 30.0
    max_rooms: int = 10_000
    max_subscribers: int = 0

    def room_limits(self) -> RoomLimits:
        """The core's bounds of every room: the one place these keys become RoomLimits."""
        return RoomLimits(
            retained_events=self.retained_events,
            snapshot_turns=self.snapshot_turns,
            history_turns=self.history_turns,
            max_bytes=self.max_room_bytes,
            history_bytes=self.history_bytes,
        )


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """[limits]: per-connection bounds (0 = unlimited)."""

    max_frame_bytes: int = 65_536
    max_prompt_chars: int = 32_768
    max_bad_frames: int = 10
    outbox_bytes: int = 1_048_576
    coalesce_ms: float = 0.0
    close_timeout_seconds: float = 2.0
    send_buffer_bytes: int = 0
    prompts_per_minute: float = 60.0
    prompt_burst: int = 100
    rooms_per_minute: float = 60.0
    room_burst: int = 100
    max_rate_limited_frames: int = 10
    max_connections_per_client: int = 256


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """[broker]: how events travel between instances."""

    url: str = "memory://"
    lease_seconds: float = 5.0
    key_prefix: str = "fanout"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """[auth]: who may watch and prompt."""

    mode: str = "open"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; secrets live beside it, read from the environment only."""

    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    rooms: RoomsConfig = field(default_factory=RoomsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    api_key: Secret | None = None
    auth_secret: Secret | None = None

    @property
    def demo(self) -> bool:
        """No key and no upstream URL: serve on the built-in mock upstream."""
        return self.api_key is None and not self.upstream.base_url


SECTIONS: dict[str, type[Any]] = {
    f.name: f.type if isinstance(f.type, type) else globals()[str(f.type)]
    for f in dataclasses.fields(Config)
    if f.name not in ("api_key", "auth_secret")
}
SECRET_ENV = {"OPENAI_API_KEY": "api_key", "FANOUT_AUTH_SECRET": "auth_secret"}
SECRET_WORDS = ("key", "secret", "password", "token")
ENV_PREFIX = "FANOUT_"
UPSTREAM_APIS = get_args(UpstreamApi)
MIN_SECRET_CHARS = 32  # HS256 wants a key at least as long as its hash (RFC 7518, 3.2)


def _coerce(where: str, default: object, value: object) -> object:
    """Check ``value`` against the default's type."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value  # type: ignore[arg-type]
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = type(default).__name__
        raise ConfigError(f"{where}: expected {kind}, got {type(value).__name__} {value!r:.60}")
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{where}: must not be negative")
    return value


def _parse_env(where: str, default: object, raw: str) -> object:
    text = raw.strip()
    if isinstance(default, bool):
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {raw!r:.60}")
    if isinstance(default, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        return int(text) if isinstance(default, int) else float(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: expected a number, got {raw!r:.60}") from exc


def _env_key(name: str) -> tuple[str, str] | None:
    rest = name[len(ENV_PREFIX) :].lower()
    for section in SECTIONS:
        if rest.startswith(section + "_"):
            return section, rest[len(section) + 1 :]
    return None


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build the configuration from a TOML file, the environment and CLI overrides.

    Args:
        path: a config.toml; None uses the built-in defaults (the same as config.toml).
        env: the environment (``os.environ``); tests pass a plain dict.
        overrides: ``{"section.key": value}`` from CLI flags; None values are ignored.

    Raises:
        ConfigError: naming every unknown key, a wrongly typed value, or a secret in a file.
    """
    values: dict[str, dict[str, object]] = {name: {} for name in SECTIONS}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        _merge_file(str(path), data, values)
    env = env or {}
    unknown_env: list[str] = []
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in SECRET_ENV:
            continue
        found = _env_key(name)
        if found is None or found[1] not in _defaults(found[0]):
            unknown_env.append(name)
            continue
        section, key = found
        default = _defaults(section)[key]
        where = f"{name} ({section}.{key})"
        values[section][key] = raw if isinstance(default, str) else _parse_env(where, default, raw)
    if unknown_env:
        raise ConfigError(f"unknown environment setting(s): {', '.join(sorted(unknown_env))}")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or key not in _defaults(section):
            raise ConfigError(f"unknown setting {dotted!r}")
        values[section][key] = value
    sections: dict[str, Any] = {
        name: SECTIONS[name](**_checked(name, values[name])) for name in SECTIONS
    }
    for var, attr in SECRET_ENV.items():
        if env.get(var, "").strip():
            sections[attr] = Secret(env[var].strip())
    config = Config(**sections)
    _validate(config)
    return config


def _defaults(section: str) -> dict[str, object]:
    instance = SECTIONS[section]()
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}


def _merge_file(where: str, data: dict[str, Any], values: dict[str, dict[str, object]]) -> None:
    unknown: list[str] = []
    for section, table in data.items():
        if section not in SECTIONS or not isinstance(table, dict):
            unknown.append(section)
            continue
        known = _defaults(section)
        for key, value in table.items():
            if key not in known:
                if any(word in key for word in SECRET_WORDS):
                    raise ConfigError(
                        f"{where}: [{section}] {key} looks like a secret; secrets come only from "
                        "the environment (OPENAI_API_KEY, FANOUT_AUTH_SECRET)"
                    )
                unknown.append(f"{section}.{key}")
                continue
            values[section][key] = value
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s): {', '.join(unknown)}")


def _checked(section: str, given: dict[str, object]) -> dict[str, object]:
    defaults = _defaults(section)
    return {key: _coerce(f"{section}.{key}", defaults[key], value) for key, value in given.items()}


def _validate(config: Config) -> None:
    if config.auth.mode not in ("open", "token"):
        raise ConfigError("auth.mode: expected 'open' or 'token'")
    if config.auth.mode == "token" and config.auth_secret is None:
        raise ConfigError("auth.mode = 'token' needs FANOUT_AUTH_SECRET in the environment")
    if config.auth_secret is not None and len(config.auth_secret.reveal()) < MIN_SECRET_CHARS:
        raise ConfigError(f"FANOUT_AUTH_SECRET must be at least {MIN_SECRET_CHARS} characters")
    if not config.broker.url.startswith(("memory://", "redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"broker.url: expected memory://, redis://, rediss:// or unix://, "
            f"got {config.broker.url!r}"
        )
    if config.broker.lease_seconds < 0.5:
        raise ConfigError("broker.lease_seconds: must be at least 0.5")
    if not config.broker.key_prefix or any(c in config.broker.key_prefix for c in "{} "):
        raise ConfigError("broker.key_prefix: a non-empty name without braces or spaces")
    if not 0 < config.server.port < 65536 and config.server.port != 0:
        raise ConfigError("server.port: expected 0-65535")
    if config.server.log_format not in ("text", "json"):
        raise ConfigError("server.log_format: expected text or json")
    if config.server.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("server.log_level: expected debug, info, warning or error")
    if config.upstream.api not in UPSTREAM_APIS:
        raise ConfigError(
            f"upstream.api: expected chat or responses, got {config.upstream.api!r:.40}"
        )
    if config.upstream.background and config.upstream.api != "responses":
        raise ConfigError("upstream.background: needs upstream.api = 'responses'")
    for name in ("connect_timeout", "idle_timeout", "total_timeout"):
        if getattr(config.upstream, name) <= 0:
            raise ConfigError(f"upstream.{name}: must be greater than 0")
    if config.limits.close_timeout_seconds <= 0:
        raise ConfigError("limits.close_timeout_seconds: must be greater than 0")
    if config.server.sse_write_timeout_seconds <= 0:
        raise ConfigError("server.sse_write_timeout_seconds: must be greater than 0")
    if config.server.proxy_header not in ("x-forwarded-for", "forwarded"):
        raise ConfigError("server.proxy_header: expected x-forwarded-for or forwarded")
    for entry in config.server.trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise ConfigError(
                f"server.trusted_proxies: {entry!r} is not an IP address or network"
            ) from exc
    for name in config.server.allowed_hosts:
        if host_name(name) is None:
            raise ConfigError(f"server.allowed_hosts: {name!r} is not a host name (no port)")
