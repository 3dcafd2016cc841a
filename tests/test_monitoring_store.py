"""The monitoring store on real databases: a SQLite file, and a throw-away PostgreSQL server on
loopback where ``initdb``/``pg_ctl`` exist (skipped, saying why, where they do not).

What is held: records round-trip; two writer processes lose nothing; a SIGKILLed writer loses
no record it had committed; rotation keeps both caps after every commit (and an archive keeps
every rotated record); feedback round-trips into per-version accuracy and outlives rotation.
"""

from __future__ import annotations

import itertools
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from petsml.monitoring.accuracy import accuracy_over_time
from petsml.monitoring.record import ModelRef
from petsml.monitoring.schema import prediction_row
from petsml.monitoring.store import StoreError, UnknownPredictionError, open_store
from tests.monitoring import MODEL, Traffic, fresh_postgres_database, records, settings_with
from tests.servers import postgres, server_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
DAY = 86_400.0
_names = itertools.count()


@pytest.fixture(scope="module")
def postgres_server():
    with postgres() as uri:
        yield uri


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path) -> str:
    """A fresh, empty store location of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "monitoring" / "predictions.sqlite")
    server = request.getfixturevalue("postgres_server")
    return fresh_postgres_database(server, f"monitor_{next(_names)}")


def _writer(location: str, count: int, tag: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.monitoring", location, str(count), tag],
        cwd=REPO, env=server_env(PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_records_round_trip_per_model_version(location):
    traffic = Traffic(0)
    older = records(traffic.draw(5, seed=1), model=ModelRef(MODEL.name, "2", ""))
    mine = records(traffic.draw(30, seed=2), start=1_800_000_100.0)
    with open_store(location, settings_with()) as store:
        store.append_many(older)
        for record in mine:
            store.append(record)
        assert store.count() == 35 and store.totals()[0] == 35
        assert [m.version for m in store.models()] == ["3", "2"]  # most recent first
        window = store.window(MODEL, last=20)
    assert window.ids.tolist() == [r.id for r in mine[-20:]]  # the last 20, oldest first
    expected = np.stack([r.probabilities for r in mine[-20:]])
    np.testing.assert_array_equal(window.sample.probabilities, expected)
    embeddings = np.stack([r.embedding for r in mine[-20:]]).astype(np.float32)
    np.testing.assert_array_equal(window.sample.embeddings, embeddings)
    assert window.sample.width.tolist() == [r.image.width for r in mine[-20:]]
    assert window.sha256.tolist() == [r.image.sha256 for r in mine[-20:]]
    assert window.times.tolist() == [r.time for r in mine[-20:]]
    with open_store(location, settings_with()) as store:
        since = store.window(MODEL, last=100, since=mine[25].time)
        assert since.ids.tolist() == [r.id for r in mine[25:]]


def test_two_writer_processes_append_concurrently_without_losing_records(location):
    open_store(location, settings_with()).close()  # the tables exist before the race
    writers = [_writer(location, 150, tag) for tag in ("a", "b")]
    outputs = [w.communicate(timeout=300) for w in writers]
    for writer, (_, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err[-3000:]
    printed = [line for out, _ in outputs for line in out.split()]
    assert len(printed) == 300
    with open_store(location, settings_with()) as store:
        assert sorted(store.ids()) == sorted(printed)
        assert store.totals()[0] == 300


def test_a_killed_writer_loses_no_committed_record(location):
    writer = _writer(location, 1_000_000, "killed")
    committed = []
    assert writer.stdout is not None
    for line in writer.stdout:  # ids printed after their commit
        committed.append(line.strip())
        if len(committed) == 200:
            writer.send_signal(signal.SIGKILL)  # mid-stream: the next append may be half done
            break
    writer.wait(timeout=60)
    assert writer.returncode == -signal.SIGKILL, writer.stderr.read()[-2000:]
    with open_store(location, settings_with()) as store:
        kept = set(store.ids())
        assert set(committed) <= kept
        assert store.totals()[0] == store.count() == len(kept)  # totals agree after the kill
        store.append(records(Traffic(0).draw(1, seed=3))[0])  # and it is writable
    if not location.startswith("postgresql"):
        with sqlite3.connect(location) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_rotation_keeps_the_row_and_byte_caps_after_every_append(location):
    traffic = Traffic(0)
    many = records(traffic.draw(120, seed=4))
    weight = prediction_row(many[0])[-1]  # what one record weighs for the byte cap
    settings = settings_with(max_rows=40, max_mb=25.5 * weight / 2**20)  # bytes bind first
    with open_store(location, settings) as store:
        for record in many:
            store.append(record)
            rows, size = store.totals()
            assert rows <= 40 and size <= settings.max_bytes
            assert rows == store.count()
        kept = store.ids()
    assert kept == [r.id for r in many[-len(kept) :]]  # the newest stay, in order
    assert len(kept) >= 10


def test_archive_rotation_keeps_every_record_somewhere(location, tmp_path):
    archive = tmp_path / "archive"
    settings = settings_with(max_rows=30, rotation="archive", archive_dir=str(archive))
    many = records(Traffic(0).draw(100, seed=5))
    with open_store(location, settings) as store:
        for record in many:
            store.append(record)
        kept = store.ids()
    files = sorted(archive.glob("predictions-*.sqlite"))
    assert files, "rotation archived nothing"
    archived = []
    for path in files:
        with open_store(path, settings_with()) as old:
            archived += old.ids()
            assert len(old.window(MODEL, last=5)) == min(5, len(old.ids()))
    assert sorted(archived + kept) == sorted(r.id for r in many)
    assert len(set(archived)) == len(archived)


def test_sqlite_file_stays_bounded_under_rotation(tmp_path):
    path = tmp_path / "predictions.sqlite"
    draw = Traffic(0).draw(600, seed=6)
    settings = settings_with(max_rows=100)
    with open_store(path, settings) as store:  # closing checkpoints the WAL into the file
        store.append_many(records(draw)[:100])
    full = path.stat().st_size
    with open_store(path, settings) as store:
        for record in records(draw, start=1_900_000_000.0)[100:]:
            store.append(record)
    assert path.stat().st_size <= 1.5 * full  # freed pages go back: the file does not grow


def test_feedback_round_trips_into_per_version_accuracy(location):
    traffic = Traffic(0)
    v2 = records(traffic.draw(6, seed=7), start=1_800_000_000.0, model=ModelRef(MODEL.name, "2"))
    v3 = records(traffic.draw(4, seed=8), start=1_800_000_000.0 + DAY)
    with open_store(location, settings_with(max_rows=10)) as store:
        store.append_many(v2 + v3)
        for i, record in enumerate(v2):  # v2: half wrong
            store.add_feedback(record.id, record.label if i % 2 else "somewhere_else", "web")
        store.add_feedback(v3[0].id, "wrong_first", "cli")
        for record in v3:  # v3: all right (v3[0] corrected: the latest answer counts)
            store.add_feedback(record.id, record.label, "web")
        with pytest.raises(UnknownPredictionError, match="no prediction 'nope'"):
            store.add_feedback("nope", "Abyssinian")
        rows = {(r.model_version, r.period): r for r in accuracy_over_time(store.feedback(), "day")}
        assert set(rows) == {("2", "2027-01-15"), ("3", "2027-01-16")}
        assert (rows["2", "2027-01-15"].n, rows["2", "2027-01-15"].correct) == (6, 3)
        assert (rows["3", "2027-01-16"].n, rows["3", "2027-01-16"].accuracy) == (4, 1.0)
        assert rows["2", "2027-01-15"].low < 0.5 < rows["2", "2027-01-15"].high
        # rotation drops the predictions; the feedback keeps what it answered
        store.append_many(records(traffic.draw(10, seed=9), start=1_900_000_000.0))
        assert not set(store.ids()) & {r.id for r in v2 + v3}
        after = accuracy_over_time(store.feedback(), "all")
    assert {(r.model_version, r.n, r.correct) for r in after} == {("2", 6, 3), ("3", 4, 4)}


def test_a_bad_location_says_which_setting_to_fix(tmp_path):
    with pytest.raises(StoreError, match="monitor.store .* is a folder"):
        open_store(tmp_path, settings_with())
    closed = "postgresql://nobody@127.0.0.1:9/none"  # the discard port: nothing listens
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        with pytest.raises(StoreError, match="psycopg2 is not installed"):
            open_store(closed, settings_with())
        return
    with pytest.raises(StoreError, match="cannot connect"):
        open_store(closed, settings_with())


def test_a_dropped_postgresql_connection_costs_one_record_not_all_after_it(postgres_server):
    """The server ends the recorder's connection (a restart, an admin): the record being
    written then is lost and counted, and the next one reconnects and commits."""
    import psycopg2

    from petsml.monitoring.recorder import Recorder
    from tests.monitoring import CLASSES

    location = fresh_postgres_database(postgres_server, f"monitor_{next(_names)}")
    recorder = Recorder(open_store(location, settings_with()), MODEL, CLASSES)
    draw = Traffic(0).draw(3, seed=10)
    assert recorder.record(draw.probabilities[0], draw.facts[0]) is not None
    admin = psycopg2.connect(location)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    admin.close()
    assert recorder.record(draw.probabilities[1], draw.facts[1]) is None
    assert recorder.failures == 1
    assert recorder.record(draw.probabilities[2], draw.facts[2]) is not None
    assert recorder.store.count() == 2
    recorder.close()
