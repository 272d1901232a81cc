import subprocess
import sys
import time

import duckdb
import pytest

from backend.chunk import FileItem, chunk_files
from backend.ingest_config import ChunkConfig
from backend.ingest import Skipped, skipped_table
from backend.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreLockedError
from conftest import REPO


def test_migrations_upgrade_an_old_file(tmp_path):
    db = tmp_path / "d.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_version (version INTEGER, name VARCHAR, applied_at TIMESTAMPTZ)")
    con.execute(MIGRATIONS[0][2])
    con.execute("INSERT INTO schema_version VALUES (1, 'old', now())")
    con.execute("INSERT INTO projects VALUES ('p', '/r', NULL, now(), now())")
    con.close()
    store = Store(db)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        assert store.projects()[0]["name"] == "p"  # old rows kept
        assert store.migrate() == []  # idempotent
    finally:
        store.close()


def test_batches_replace_and_gone(tmp_path):
    store = Store(tmp_path / "d.duckdb")
    try:
        store.upsert_project("p", "/r", None)
        items = [FileItem("a.md", "markdown", "markdown", b"# A\n\nalpha beta gamma delta", "s1", 27, None),
                 FileItem("b.md", "markdown", "markdown", b"# B\n\nbeta gamma delta epsilon", "s2", 28, None)]
        files, chunks = chunk_files("p", items, ChunkConfig())
        assert store.apply_ingest_batch("p", files, chunks) == 2
        files2, chunks2 = chunk_files("p", [FileItem("a.md", "markdown", "markdown", b"# A2\n\nnew text here ok",
                                                     "s3", 21, None)], ChunkConfig())
        store.apply_ingest_batch("p", files2, chunks2)
        store.apply_ingest_batch("p", skipped_table("p", [Skipped("x.bin", "binary", "NUL bytes")], None, "fp"), None)
        store.mark_gone("p", ["b.md"])
        stats = store.stats("p")
        assert stats["files"] == 1 and stats["chunks"] == 1 and stats["gone"] == 1
        assert stats["skipped"] == {"binary": 1}
        assert store.file_index("p")["a.md"][0] == "s3"
        with pytest.raises(KeyError):
            store.stats("nope")
    finally:
        store.close()


HOLD = """
import sys, time
sys.path.insert(0, %r)
from backend.store import Store
s = Store(%r, role="test holder", ray_address="127.0.0.1:9999")
print("ready", flush=True)
time.sleep(60)
"""


def test_second_owner_fails_at_once_naming_the_holder(tmp_path):
    db = tmp_path / "d.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLD % (str(REPO), str(db))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        with pytest.raises(StoreLockedError) as err:
            Store(db)
        assert time.monotonic() - started < 5  # fails, does not wait
        msg = str(err.value)
        assert f"pid {holder.pid}" in msg and "test holder" in msg and "--ray-address 127.0.0.1:9999" in msg
    finally:
        holder.kill()
        holder.wait()
