"""Fixtures on the real services (`scripts/stack up`): an outbox table migrated by the relay's
own `outbox-relay migrate` in a schema of this session, and connections of both drivers.

The relay binary comes from OUTBOX_RELAY_BIN, else target/debug/outbox-relay (`cargo build`).
"""

import os
import pathlib
import subprocess
import uuid

import asyncpg
import psycopg
import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
DATABASE_URL = os.environ.get(
    "OUTBOX_TEST_DATABASE_URL", "postgres://outbox:outbox@127.0.0.1:5432/outbox"
)
KAFKA = os.environ.get("OUTBOX_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def binary(env: str, name: str) -> pathlib.Path:
    if os.environ.get(env):
        return pathlib.Path(os.environ[env])
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    path = target / "debug" / name
    if not path.exists():
        pytest.fail(f"{name} not built: run `cargo build --workspace` or set {env}")
    return path


def relay_config(directory: pathlib.Path, schema: str, extra: str = "") -> pathlib.Path:
    path = directory / f"{schema}.toml"
    path.write_text(
        f'[database]\nurl = "{DATABASE_URL}"\nschema = "{schema}"\ntable = "outbox"\n\n'
        f'[kafka]\nbootstrap_servers = "{KAFKA}"\n\n{extra}'
    )
    return path


def migrate(directory: pathlib.Path, schema: str, extra: str = "") -> pathlib.Path:
    """A fresh outbox table (and its publish functions) in `schema`; returns the config."""
    config = relay_config(directory, schema, extra)
    done = subprocess.run(
        [str(binary("OUTBOX_RELAY_BIN", "outbox-relay")), "migrate", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return config


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def schema(tmp_path_factory) -> str:
    name = unique("py_")
    migrate(tmp_path_factory.mktemp("cfg"), name)
    return name


@pytest.fixture
def topic() -> str:
    return unique("py-")


@pytest.fixture
async def apg():
    conn = await asyncpg.connect(DATABASE_URL)
    yield conn
    await conn.close()


@pytest.fixture
async def pg():
    conn = await psycopg.AsyncConnection.connect(DATABASE_URL)
    yield conn
    await conn.close()


@pytest.fixture(params=["asyncpg", "psycopg"])
async def conn(request, apg, pg):
    """Each test that takes `conn` runs once per driver."""
    return apg if request.param == "asyncpg" else pg


async def rows(schema: str, topic: str):
    """The committed rows of `topic`, in id order, read on a connection of their own."""
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        return await conn.fetch(
            f'SELECT event_id::text, key, payload::text, headers::text FROM "{schema}".outbox '
            "WHERE topic = $1 ORDER BY id",
            topic,
        )
    finally:
        await conn.close()
