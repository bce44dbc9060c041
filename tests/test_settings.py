"""Settings come from the environment, once, with documented defaults."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest

from app.errors import SettingsError
from app.logs import CHATTY_LOGGERS
from app.main import create_app
from app.settings import Settings, load_settings, model_backends
from planner.model_client import Price
from tools.egress import EgressPolicy


def test_defaults_when_the_environment_is_empty() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.model_url == "http://localhost:30000/v1"
    assert settings.database_url is None
    assert settings.data_dir == Path("data")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_values_are_read_and_typed() -> None:
    settings = load_settings(
        {
            "PORT": "9001",
            "DATA_DIR": "/srv/sb",
            "DATABASE_URL": "postgresql://x/y",
            "HOST": "0.0.0.0",
            "DURABLE_STEPS": "true",
        }
    )
    assert settings.durable_steps is True
    assert Settings().durable_steps is False
    assert settings.port == 9001
    assert settings.data_dir == Path("/srv/sb")
    assert settings.database_url == "postgresql://x/y"


def test_a_bad_port_names_the_variable_and_what_it_expects() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"PORT": "eighty"})
    assert str(caught.value) == (
        "PORT is invalid (Expected `int`, got `str`): "
        "expected a TCP port number between 1 and 65535"
    )


def test_an_out_of_range_port_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"^PORT=70000 is out of range"):
        load_settings({"PORT": "70000"})


def test_log_level_is_read_in_any_case_and_an_unknown_one_is_refused() -> None:
    assert load_settings({"LOG_LEVEL": "warning"}).log_level == "WARNING"
    with pytest.raises(SettingsError) as caught:
        load_settings({"LOG_LEVEL": "loud"})
    assert str(caught.value) == (
        "LOG_LEVEL is invalid (Invalid enum value 'LOUD'): expected DEBUG, INFO, WARNING or ERROR"
    )


@pytest.mark.parametrize(
    ("level", "outgoing"),
    [("INFO", "WARNING"), ("WARNING", "WARNING"), ("ERROR", "ERROR"), ("DEBUG", "DEBUG")],
)
def test_the_app_logs_at_log_level_and_libraries_chatter_only_when_debugging(
    level: str, outgoing: str
) -> None:
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in ("", *CHATTY_LOGGERS)}
    try:
        create_app(Settings(log_level=level))  # type: ignore[arg-type]
        assert logging.getLevelName(root.level) == level
        for name in CHATTY_LOGGERS:
            assert logging.getLevelName(logging.getLogger(name).level) == outgoing
    finally:
        for name, was in saved.items():
            logging.getLogger(name).setLevel(was)


def test_the_default_backends_price_is_read_and_a_bad_one_is_refused() -> None:
    settings = load_settings({"MODEL_PRICE": '{"input": 0.2, "output": 0.8}'})
    [default] = model_backends(settings)
    assert default.price == Price(input=0.2, output=0.8)
    assert default.price.cached_input_or_input == 0.2
    with pytest.raises(SettingsError) as refused:
        load_settings({"MODEL_PRICE": '{"input": -1, "output": 0.8}'})
    assert str(refused.value).startswith("MODEL_PRICE is invalid (Expected `float` >= 0")


def test_a_join_model_that_names_no_backend_stops_start_up() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"JOIN_MODEL": "small"})
    assert str(raised.value) == ("JOIN_MODEL=small: no such model backend; configured: "
                                 "default (MODEL_BACKENDS)")


@pytest.mark.parametrize("entry", ["not a cidr/99", "10.0.0.0/99", "-bad-.example.com", "a b"])
def test_a_malformed_egress_allowlist_entry_stops_start_up(entry: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"EGRESS_ALLOWLIST": f"tools.internal, {entry}"})
    assert str(raised.value) == (
        f"EGRESS_ALLOWLIST: {entry!r} is neither a host name, an IP address nor a network such "
        "as 10.0.0.0/8; expected host names, IPs or CIDRs, comma-separated")


def test_egress_allowlist_takes_hosts_addresses_and_networks() -> None:
    settings = load_settings({"EGRESS_ALLOWLIST": "tools.internal, 10.1.2.3, fd00::/8, db."})
    policy = EgressPolicy.parse(settings.egress_allowlist)
    assert policy.hosts == {"tools.internal", "db"}
    assert policy.networks == [ipaddress.ip_network("10.1.2.3/32"),
                               ipaddress.ip_network("fd00::/8")]
