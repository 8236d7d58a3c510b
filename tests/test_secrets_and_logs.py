"""Keys come from the environment or a 0600 file, and never reach a log line."""
import io
import os

import orjson
import pytest
from loguru import logger

from karb import logs
from karb.config import LogConfig
from karb.model import Venue
from karb.secrets import Credentials, SecretsError, load_credentials

SECRET = "sk-test-0123456789abcdef"
ACCESS = "ak-test-fedcba9876543210"


@pytest.fixture
def no_key_env(monkeypatch):
    for name in ("KARB_UPBIT_ACCESS_KEY", "KARB_UPBIT_SECRET_KEY",
                 "KARB_BITHUMB_API_KEY", "KARB_BITHUMB_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_load_credentials_with_env_returns_keys(monkeypatch, no_key_env):
    monkeypatch.setenv("KARB_BITHUMB_API_KEY", ACCESS)
    monkeypatch.setenv("KARB_BITHUMB_SECRET_KEY", SECRET)
    creds = load_credentials(Venue.BITHUMB)
    assert creds == Credentials(ACCESS, SECRET)
    assert SECRET not in repr(creds) and SECRET not in str(creds)


def test_load_credentials_with_nothing_names_env_vars_not_keys(no_key_env):
    with pytest.raises(SecretsError, match="KARB_UPBIT_ACCESS_KEY and KARB_UPBIT_SECRET_KEY"):
        load_credentials(Venue.UPBIT)


def test_load_credentials_with_0600_file_reads_venue_entry(tmp_path, no_key_env):
    path = tmp_path / "keys.yaml"
    path.write_text(f"upbit: {{access_key: {ACCESS}, secret_key: {SECRET}}}\n", encoding="utf-8")
    os.chmod(path, 0o600)
    assert load_credentials(Venue.UPBIT, str(path)).secret_key == SECRET
    with pytest.raises(SecretsError, match="no bithumb API keys"):
        load_credentials(Venue.BITHUMB, str(path))


def test_load_credentials_with_group_readable_file_refuses(tmp_path, no_key_env):
    path = tmp_path / "keys.yaml"
    path.write_text(f"upbit: {{access_key: {ACCESS}, secret_key: {SECRET}}}\n", encoding="utf-8")
    os.chmod(path, 0o640)
    with pytest.raises(SecretsError, match="chmod 600") as info:
        load_credentials(Venue.UPBIT, str(path))
    assert SECRET not in str(info.value)


def test_load_credentials_with_missing_file_says_so(tmp_path, no_key_env):
    with pytest.raises(SecretsError, match="does not exist"):
        load_credentials(Venue.UPBIT, str(tmp_path / "none.yaml"))


def test_log_line_containing_a_loaded_key_is_redacted_in_console_and_file(tmp_path, monkeypatch, no_key_env):
    monkeypatch.setenv("KARB_UPBIT_ACCESS_KEY", ACCESS)
    monkeypatch.setenv("KARB_UPBIT_SECRET_KEY", SECRET)
    load_credentials(Venue.UPBIT)
    file = tmp_path / "karb.jsonl"
    logs.setup_logging(LogConfig(level="DEBUG", file=str(file)), console=False)
    console = io.StringIO()
    logger.add(console, level="DEBUG", format="{message} {extra}")
    try:
        logger.bind(header=f"Bearer {SECRET}").info("signing with {} and {}", SECRET, ACCESS)
        try:
            raise ValueError(f"bad key {SECRET}")
        except ValueError:
            logger.exception("request failed")
        logger.complete()
    finally:
        logger.remove()
    text = console.getvalue() + file.read_text(encoding="utf-8")
    assert SECRET not in text and ACCESS not in text
    assert "***" in text
    record = orjson.loads(file.read_text(encoding="utf-8").splitlines()[0])
    assert record["record"]["message"] == "signing with *** and ***"
