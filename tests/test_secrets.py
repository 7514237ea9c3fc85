"""flyteagents.get_secret: lookup order, flytekit conventions, safe names and safe errors."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

import flyteagents
from flyteagents import ExternalServiceError, InvalidTaskError, SecretNotFoundError, get_secret
from flyteagents.server._errors import status_for

VALUE = "s3cr3t-value-7f2c"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    """Empty secrets directories the test controls, so a real /etc/secrets never leaks in."""
    ours, flytes = tmp_path / "flyteagents", tmp_path / "flyte"
    ours.mkdir()
    flytes.mkdir()
    monkeypatch.setenv("FLYTEAGENTS_SECRETS_DIR", str(ours))
    monkeypatch.setenv("FLYTE_SECRETS_DEFAULT_DIR", str(flytes))
    for var in ("FLYTE_SECRETS_ENV_PREFIX", "FLYTE_SECRETS_FILE_PREFIX", "FLYTEAGENTS_SECRET_TEAM_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return ours, flytes


def test_public_and_in_all() -> None:
    assert flyteagents.get_secret is get_secret and "get_secret" in flyteagents.__all__
    assert "SecretNotFoundError" in flyteagents.__all__


def test_environment_variable_upper_cased_with_underscores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTEAGENTS_SECRET_TEAM_TOKEN", f"  {VALUE}\n")
    assert get_secret("team-token") == VALUE


def test_file_in_the_secrets_directory(isolated: tuple[Path, Path]) -> None:
    (isolated[0] / "team-token").write_text(VALUE + "\n")
    assert get_secret("team-token") == VALUE


def test_environment_wins_over_file_and_empty_values_are_absent(
    isolated: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated[0] / "team-token").write_text("from-file")
    monkeypatch.setenv("FLYTEAGENTS_SECRET_TEAM_TOKEN", "from-env")
    assert get_secret("team-token") == "from-env"
    monkeypatch.setenv("FLYTEAGENTS_SECRET_TEAM_TOKEN", "  ")
    assert get_secret("team-token") == "from-file"


def test_rotated_file_is_read_again(isolated: tuple[Path, Path]) -> None:
    path = isolated[0] / "team-token"
    path.write_text("old")
    assert get_secret("team-token") == "old"
    path.write_text("new")
    assert get_secret("team-token") == "new"


def test_extra_variables_in_order_before_files(isolated: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated[0] / "team-token").write_text("from-file")
    monkeypatch.setenv("LEGACY_B", "b")
    assert get_secret("team-token", env=("LEGACY_A", "LEGACY_B")) == "b"
    monkeypatch.setenv("LEGACY_A", "a")
    assert get_secret("team-token", env=("LEGACY_A", "LEGACY_B")) == "a"
    assert get_secret("team-token") == "from-file", "extra variables are only read when asked for"


def test_a_mounted_kubernetes_secret_directory(isolated: tuple[Path, Path]) -> None:
    (isolated[0] / "team-token").mkdir()
    (isolated[0] / "team-token" / "token").write_text(VALUE)
    assert get_secret("team-token", dir_key="token") == VALUE
    with pytest.raises(SecretNotFoundError):
        get_secret("team-token")


def test_flytekit_conventions_only_when_asked(isolated: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_FSEC_BQ_SA", "from-fsec")
    assert get_secret("bq/sa", flytekit=True) == "from-fsec"
    with pytest.raises(SecretNotFoundError):
        get_secret("bq/sa")
    monkeypatch.delenv("_FSEC_BQ_SA")
    (isolated[1] / "bq").mkdir()
    (isolated[1] / "bq" / "sa").write_text("from-flyte-file")
    assert get_secret("bq/sa", flytekit=True) == "from-flyte-file"
    # A group-less flytekit secret is a lower-cased file, as flytekit's SecretsManager reads it.
    (isolated[1] / "flyte_openai_api_key").write_text("sk-file")
    assert get_secret("FLYTE_OPENAI_API_KEY", flytekit=True) == "sk-file"


def test_flytekit_prefix_settings(isolated: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_SECRETS_ENV_PREFIX", "MYSEC_")
    monkeypatch.setenv("MYSEC_GROUP_KEY", "env-prefixed")
    assert get_secret("group/key", flytekit=True) == "env-prefixed"
    monkeypatch.delenv("MYSEC_GROUP_KEY")
    monkeypatch.setenv("FLYTE_SECRETS_FILE_PREFIX", "pre-")
    (isolated[1] / "group").mkdir()
    (isolated[1] / "group" / "pre-key").write_text("file-prefixed")
    assert get_secret("group/key", flytekit=True) == "file-prefixed"


def test_missing_secret_names_it_and_where_it_was_looked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_OTHER_VAR", VALUE)
    with pytest.raises(SecretNotFoundError) as info:
        get_secret("team-token", env=("SOME_UNSET_VAR",), flytekit=True)
    message = str(info.value)
    assert "'team-token'" in message and "FLYTEAGENTS_SECRET_TEAM_TOKEN" in message and "team-token" in message
    assert VALUE not in message
    err = info.value
    assert isinstance(err, InvalidTaskError) and isinstance(err, ExternalServiceError) and not err.retryable
    assert status_for(err)[0] == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a/../../b", "/abs", "a b", "a/b/c", "-x", "x" * 200, ".."])
def test_names_cannot_reach_other_files(name: str) -> None:
    with pytest.raises(InvalidTaskError, match="secret name"):
        get_secret(name)


def test_a_task_cannot_read_an_arbitrary_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", VALUE)
    with pytest.raises(SecretNotFoundError) as info:
        get_secret("AWS_SECRET_ACCESS_KEY", flytekit=True)
    assert VALUE not in str(info.value)
