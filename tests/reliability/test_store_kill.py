"""The database's owner killed with SIGKILL in the middle of a stream of writes: every batch it acknowledged is
there after reopening, and no batch is there in part. First a plain `Store` owner, then the real one, the
store actor's Ray worker process, written to through the client API by a driver."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from backend.store import Store, holder_path
from conftest import REPO

BATCH = 100


WRITER = """
import sys
sys.path.insert(0, %r)
import pyarrow as pa
from backend.chunk import FILE_SCHEMA
from backend.store import Store
s = Store(%r)
s.upsert_project("p", "/r", None)
i = 0
while True:
    rows = [dict(project="p", path=f"f{i}-{k}", kind="text", language=None, size_bytes=1, sha256="s",
                 git_commit=None, status="ok", skip_reason=None, skip_detail=None, n_chunks=0, n_tokens=0,
                 chunker="fp") for k in range(100)]
    s.apply_ingest_batch("p", pa.Table.from_pylist(rows, schema=FILE_SCHEMA), None)
    print(i, flush=True)
    i += 1
"""


def test_killed_owner_mid_write_loses_no_committed_batch(tmp_path, report):
    db = tmp_path / "d.duckdb"
    writer = subprocess.Popen([sys.executable, "-c", WRITER % (str(REPO), str(db))], stdout=subprocess.PIPE, text=True)
    committed = -1
    for _ in range(30):  # let it commit some batches, then kill it mid-stream
        committed = int(writer.stdout.readline())
    os.kill(writer.pid, signal.SIGKILL)
    # what it printed before dying was committed too
    committed = max([committed] + [int(line) for line in writer.stdout.read().split()])
    writer.wait()
    store = Store(db)
    try:
        n = store.con.execute("SELECT count(*) FROM files").fetchone()[0]
        sizes = [r[0] for r in store.con.execute(
            "SELECT count(*) FROM files GROUP BY split_part(path, '-', 1)").fetchall()]
    finally:
        store.close()
    torn = sum(1 for size in sizes if size != BATCH)
    report(batches_committed=committed + 1, rows_found=n, rows_lost=max(0, (committed + 1) * BATCH - n),
           torn_batches=torn)
    # every printed batch was committed; a batch is all-or-nothing
    assert n >= (committed + 1) * BATCH and n % BATCH == 0 and torn == 0


DRIVER = """
import os, sys
sys.path.insert(0, %r)
import ray
from actors.client import DocTune
client = DocTune(%r, num_cpus=1)
print("pid", ray.get(client.store.actor.__ray_call__.remote(lambda self: os.getpid())), flush=True)
run = "killed-owner"
client.store.create_run(run, "train", None, {})
i = 0
while True:
    client.store.record_metrics(run, [(i * %d + k, "loss", float(k)) for k in range(%d)])
    print(i, flush=True)
    i += 1
"""


def _lines(stream) -> "queue.Queue[str | None]":
    """The stream's lines on a queue (None at its end), so reading can time out."""
    q: queue.Queue = queue.Queue()

    def pump():
        for line in stream:
            q.put(line.strip())
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


@pytest.mark.slow
def test_killed_store_actor_mid_write_loses_no_committed_batch(tmp_path, ray_session, report):
    """SIGKILL the store actor's worker process while a driver writes metric batches through it; a fresh client
    on the same home opens the database (the dead holder is detected) with every acknowledged batch, whole."""
    home = tmp_path / "home"
    home.mkdir()
    err = open(tmp_path / "driver.err", "w")
    driver = subprocess.Popen([sys.executable, "-c", DRIVER % (str(REPO), str(home), BATCH, BATCH)],
                              stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    lines = _lines(driver.stdout)
    try:
        first = lines.get(timeout=120)
        assert first and first.startswith("pid "), f"driver said {first!r}: {(tmp_path / 'driver.err').read_text()}"
        actor_pid = int(first.split()[1])
        assert actor_pid != driver.pid
        holder = holder_path(home / "doctune.duckdb").read_text()
        assert f'"pid": {actor_pid}' in holder  # the actor's worker process is the owner we kill
        committed = -1
        while committed < 29:  # let it commit 30 batches, then kill the owner while writes go on
            line = lines.get(timeout=60)
            assert line is not None, (tmp_path / "driver.err").read_text()
            committed = int(line)
        os.kill(actor_pid, signal.SIGKILL)
        # the driver's next call fails once Ray sees its actor die; whatever it printed until then was committed
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if line.isdigit():
                committed = max(committed, int(line))
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
        driver.wait()
        err.close()

    from actors.client import DocTune

    started = time.monotonic()
    client = DocTune(home)  # a new store actor in the test's own cluster: the file must open
    open_s = time.monotonic() - started
    try:
        steps = client.store.metrics("killed-owner").column("step").to_pylist()
        run = client.store.run("killed-owner")
    finally:
        client.store.shutdown()
    found = len(steps)
    per_batch = {}
    for step in steps:
        per_batch[step // BATCH] = per_batch.get(step // BATCH, 0) + 1
    torn = sum(1 for n in per_batch.values() if n != BATCH)
    batches = committed + 1
    report(batches_committed=batches, rows_found=found, rows_lost=max(0, batches * BATCH - found),
           torn_batches=torn, batches_found=len(per_batch), reopen_s=round(open_s, 2),
           driver_exit=driver.returncode)  # 1: it stopped on ActorDiedError; -9: we killed it
    assert run is not None
    assert found % BATCH == 0 and torn == 0, per_batch  # no batch is there in part
    assert found >= batches * BATCH  # every acknowledged batch is there
    assert sorted(set(steps)) == list(range(found))  # the batches in order, none twice, at most one unacknowledged
    assert found <= (batches + 1) * BATCH
