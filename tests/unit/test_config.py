"""Settings.from_env: defaults, parsing, and refusals that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediajobs.config import DEV_SECRET_PREFIX, Environment, Settings, StorageKind
from mediajobs.errors import ConfigError

SECRET = "s" * 40
PRODUCTION = {
    "MEDIAJOBS_ENV": "production",
    "DATABASE_URL": "postgresql://app:hunter2@db/mediajobs",
    "REDIS_URL": "redis://cache:6379/0",
    "GCS_BUCKET": "media",
    "MEDIAJOBS_JWT_SECRET": SECRET,
}


def test_defaults_are_a_development_setup_with_memory_storage():
    settings = Settings.from_env({})
    assert settings.env is Environment.DEVELOPMENT
    assert settings.database_url is None and settings.redis_url is None
    assert settings.storage.kind is StorageKind.MEMORY
    assert (settings.worker_concurrency, settings.lease_seconds) == (8, 30.0)
    assert settings.data_dir == Path(".mediajobs")


def test_storage_is_chosen_by_which_bucket_is_set():
    gcs = Settings.from_env({"GCS_BUCKET": "b", "GCS_SERVICE_ACCOUNT_JSON": "{}"}).storage
    assert (gcs.kind, gcs.bucket, gcs.gcs_service_account_json) == (StorageKind.GCS, "b", "{}")
    s3 = Settings.from_env(
        {
            "S3_BUCKET": "b",
            "S3_ENDPOINT_URL": "https://s3.eu-west-2.amazonaws.com",
            "S3_REGION": "eu-west-2",
            "S3_FORCE_PATH_STYLE": "yes",
        }
    ).storage
    assert (s3.kind, s3.region, s3.force_path_style) == (StorageKind.S3, "eu-west-2", True)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"GCS_BUCKET": "a", "S3_BUCKET": "b"}, "S3_BUCKET"),
        ({"S3_REGION": "eu-west-2"}, "S3_REGION"),
        ({"GCS_SERVICE_ACCOUNT_JSON": "{}"}, "GCS_SERVICE_ACCOUNT_JSON"),
        ({"MEDIAJOBS_ENV": "staging"}, "MEDIAJOBS_ENV"),
        ({"MEDIAJOBS_WORKER_CONCURRENCY": "many"}, "MEDIAJOBS_WORKER_CONCURRENCY"),
        ({"MEDIAJOBS_WORKER_CONCURRENCY": "0"}, "MEDIAJOBS_WORKER_CONCURRENCY"),
        ({"MEDIAJOBS_LEASE_SECONDS": "soon"}, "MEDIAJOBS_LEASE_SECONDS"),
        ({"MEDIAJOBS_LEASE_SECONDS": "0.5"}, "MEDIAJOBS_LEASE_SECONDS"),
        ({"MEDIAJOBS_POLL_INTERVAL": "40s"}, "MEDIAJOBS_POLL_INTERVAL"),
        ({"S3_BUCKET": "b", "S3_FORCE_PATH_STYLE": "maybe"}, "S3_FORCE_PATH_STYLE"),
        ({"MEDIAJOBS_JWT_SECRET": "short"}, "MEDIAJOBS_JWT_SECRET"),
        ({"MEDIAJOBS_LOG_LEVEL": "chatty"}, "MEDIAJOBS_LOG_LEVEL"),
        ({"MEDIAJOBS_PORT": "70000"}, "MEDIAJOBS_PORT"),
    ],
)
def test_malformed_or_contradictory_settings_name_the_variable(environ, variable):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ)
    assert raised.value.variable == variable
    assert str(raised.value).startswith(f"{variable}: ")


def test_durations_accept_units():
    settings = Settings.from_env(
        {
            "MEDIAJOBS_LEASE_SECONDS": "2m",
            "MEDIAJOBS_JOB_RETENTION": "7d",
            "MEDIAJOBS_POLL_INTERVAL": "250ms",
            "MEDIAJOBS_JOB_RETENTION_HOT": "0",
        }
    )
    assert settings.lease_seconds == 120.0
    assert settings.job_retention == 7 * 86400.0
    assert settings.poll_interval == pytest.approx(0.25)
    assert settings.job_retention_hot == 0.0


def test_a_complete_production_configuration_is_accepted():
    settings = Settings.from_env(PRODUCTION)
    assert settings.env is Environment.PRODUCTION
    assert settings.storage.kind is StorageKind.GCS


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"GCS_BUCKET": ""}, "GCS_BUCKET"),  # memory storage in production
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"REDIS_URL": ""}, "REDIS_URL"),
        ({"MEDIAJOBS_JWT_SECRET": ""}, "MEDIAJOBS_JWT_SECRET"),
        ({"MEDIAJOBS_JWT_SECRET": DEV_SECRET_PREFIX + "x" * 40}, "MEDIAJOBS_JWT_SECRET"),
    ],
)
def test_production_refuses_development_parts(change, variable):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**PRODUCTION, **change})
    assert raised.value.variable == variable


def test_secrets_never_show_in_repr_or_describe():
    settings = Settings.from_env(PRODUCTION)
    shown = repr(settings) + str(settings.describe())
    assert SECRET not in shown
    assert "hunter2" not in shown
    assert settings.describe()["database"] == "postgresql://app:***@db/mediajobs"


def test_describe_says_where_the_jwt_secret_comes_from_never_its_value(tmp_path):
    data_dir = tmp_path / "data"
    development = Settings.from_env({"MEDIAJOBS_DATA_DIR": str(data_dir)})
    path = data_dir / "jwt-secret"
    assert development.describe()["jwtSecret"] == (
        f"unset (mediajobs dev, serve and token create one in {path})"
    )
    data_dir.mkdir()
    dev_secret = DEV_SECRET_PREFIX + "x" * 43
    path.write_text(dev_secret + "\n")
    shown = development.describe()
    assert shown["jwtSecret"] == f"set (the development secret in {path})"
    assert dev_secret not in str(shown)
    explicit = Settings.from_env(
        {"MEDIAJOBS_DATA_DIR": str(data_dir), "MEDIAJOBS_JWT_SECRET": SECRET}
    )
    assert explicit.describe()["jwtSecret"] == "set (MEDIAJOBS_JWT_SECRET)"
    assert SECRET not in str(explicit.describe())
    assert Settings.from_env(PRODUCTION).describe()["jwtSecret"] == "set (MEDIAJOBS_JWT_SECRET)"
    # Production never uses the development file, so it does not count there.
    production = Settings(env=Environment.PRODUCTION, data_dir=data_dir)
    assert production.describe()["jwtSecret"] == "unset"


def test_the_memory_store_keeps_its_files_under_the_data_dir_in_development_only(tmp_path):
    development = Settings.from_env({"MEDIAJOBS_DATA_DIR": str(tmp_path)})
    assert development.memory_store_directory == tmp_path / "storage"
    assert development.describe()["storageDirectory"] == str(tmp_path / "storage")
    test = Settings.from_env({"MEDIAJOBS_ENV": "test", "MEDIAJOBS_DATA_DIR": str(tmp_path)})
    assert test.memory_store_directory is None
    assert test.describe()["storageDirectory"] is None
    s3 = Settings.from_env({"MEDIAJOBS_DATA_DIR": str(tmp_path), "S3_BUCKET": "media"})
    assert s3.memory_store_directory is None
