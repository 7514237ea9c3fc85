"""KafkaSensorConfig: which cluster and topic a KafkaSensor watches, and which messages count."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flyteagents.plugin import check_secret_name

__all__ = ["KafkaSensorConfig"]

_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass
class KafkaSensorConfig:
    """Where a KafkaSensor looks and what it waits for.

    Secrets are given by name (``sasl_password_secret``) and read on the agent; the
    config travels in the task template and resource_meta, so it never holds a secret.

    Args:
        bootstrap_servers: ``host:port`` of one or more brokers, comma-separated.
        topic: the topic to watch.
        key: only messages with this key (UTF-8) count.
        headers: only messages carrying every one of these headers with these values count.
        value_regex: only messages whose value (UTF-8) matches this regex (``re.search``) count.
        max_messages: at most this many matching messages are returned when the sensor fires.
        max_bytes_per_poke: the most bytes one poke fetches per partition (a bounded batch).
        request_timeout: seconds allowed for one poke's requests to the brokers (at most 8).
        outage_budget: seconds the brokers may stay unreachable before the sensor fails; until
            then each poke answers RUNNING, saying how long the outage has lasted.
        security_protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
        sasl_mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
        sasl_username: the SASL user name.
        sasl_password_secret: the name of the secret holding the SASL password.
        ssl_cafile: CA bundle path on the agent, for SSL/SASL_SSL.
        ssl_certfile: client certificate path on the agent (mutual TLS).
        ssl_keyfile: client key path on the agent (mutual TLS).
        ssl_key_password_secret: the name of the secret holding the client key's password.
    """

    bootstrap_servers: str
    topic: str
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    value_regex: str | None = None
    max_messages: int = 1
    max_bytes_per_poke: int = 1024 * 1024
    request_timeout: float = 5.0
    outage_budget: float = 300.0
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password_secret: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password_secret: str | None = None

    def __post_init__(self) -> None:
        servers = [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        if not servers or any(not re.match(r"^[^:\s]+:\d{1,5}$", s) for s in servers):
            raise ValueError(f"bootstrap_servers must be 'host:port[,host:port...]', got {self.bootstrap_servers!r}")
        if not re.match(r"^[A-Za-z0-9._-]{1,249}$", self.topic):
            raise ValueError(f"topic {self.topic!r} is not a valid Kafka topic name")
        if self.value_regex is not None:
            try:
                re.compile(self.value_regex)
            except re.error as exc:
                raise ValueError(f"value_regex {self.value_regex!r} does not compile: {exc}") from None
        if self.max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {self.max_messages}")
        if self.max_bytes_per_poke < 1024:
            raise ValueError(f"max_bytes_per_poke must be at least 1024, got {self.max_bytes_per_poke}")
        if not 0 < self.request_timeout <= 8:
            # The engine allows one poke 8 s, under FlytePropeller's GetTask deadline.
            raise ValueError(f"request_timeout must be in (0, 8] seconds, got {self.request_timeout}")
        if not self.outage_budget > 0:
            raise ValueError(f"outage_budget must be a positive number of seconds, got {self.outage_budget}")
        if self.security_protocol not in _PROTOCOLS:
            raise ValueError(
                f"security_protocol must be one of {', '.join(_PROTOCOLS)}, got {self.security_protocol!r}"
            )
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in _MECHANISMS:
                raise ValueError(f"sasl_mechanism must be one of {', '.join(_MECHANISMS)}, got {self.sasl_mechanism!r}")
            if not self.sasl_username or not self.sasl_password_secret:
                raise ValueError("SASL needs sasl_username and sasl_password_secret (the name of a secret)")
        for name in ("sasl_password_secret", "ssl_key_password_secret"):
            value = getattr(self, name)
            if value is not None:
                check_secret_name(value, name)

    @property
    def servers(self) -> tuple[str, ...]:
        """The bootstrap servers, in order."""
        return tuple(s.strip() for s in self.bootstrap_servers.split(",") if s.strip())
