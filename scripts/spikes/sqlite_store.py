#!/usr/bin/env python3
"""Issue 20, step 0: would SQLite (WAL mode) make a better spool store than our own log?

A short spike, not part of the bridge. It puts SQLite, through Python's sqlite3 module (the
same C library rusqlite bundles, a few releases older), through the faults of issue 20's
rows 1, 2, 5, 6 and 7, and measures the group-commit cost that bounds spool throughput,
beside the same workload as an append-only file with `fdatasync` (what our log does).

    sudo python3 scripts/spikes/sqlite_store.py [faults|throughput|all]

Faults need root (a 4 MiB tmpfs is mounted under a scratch directory). The results are
written up in docs/reliability.md, "Step 0: what the spool is built on".
"""

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

RECORD = os.urandom(2048)  # a 2 KiB event, as in scripts/bench


def open_store(path):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit: a 202's promise
    db.execute("CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, body BLOB)")
    db.execute("CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY, next INTEGER)")
    return db


def append(db, n):
    db.execute("BEGIN")
    for _ in range(n):
        db.execute("INSERT INTO log (body) VALUES (?)", (RECORD,))
    db.execute("COMMIT")


def forward(db, upto):
    """What the forwarder does once Kafka has acked: move the cursor, delete what it passed."""
    db.execute("BEGIN")
    db.execute("INSERT OR REPLACE INTO cursor VALUES (0, ?)", (upto,))
    db.execute("DELETE FROM log WHERE seq < ?", (upto,))
    db.execute("COMMIT")


def tmpfs(size):
    where = tempfile.mkdtemp(prefix="spike-tmpfs-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where], check=True)
    return where


def unmount(where):
    subprocess.run(["umount", where], check=False)
    shutil.rmtree(where, ignore_errors=True)


def row1_full_disk():
    """Fill a 4 MiB filesystem, then try to forward (move the cursor, delete) and append."""
    where = tmpfs("4m")
    try:
        db = open_store(os.path.join(where, "spool.db"))
        acked = 0
        try:
            while True:
                append(db, 1)
                acked += 1
        except sqlite3.Error as e:
            full_error = str(e)
            db.execute("ROLLBACK") if db.in_transaction else None
        results = {"acked_until_full": acked, "error_when_full": full_error}
        try:
            forward(db, acked + 1)
            results["forward_on_full_disk"] = "ok"
        except sqlite3.Error as e:
            results["forward_on_full_disk"] = f"failed: {e}"
            db.execute("ROLLBACK") if db.in_transaction else None
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            append(db, 1)
            results["append_after_forward"] = "ok"
        except sqlite3.Error as e:
            results["append_after_forward"] = f"failed: {e}"
        db.close()
        try:
            db = open_store(os.path.join(where, "spool.db"))
            count = db.execute("SELECT count(*) FROM log").fetchone()[0]
            results["reopen_on_full_disk"] = f"ok, {count} records"
            db.close()
        except sqlite3.Error as e:
            results["reopen_on_full_disk"] = f"failed: {e}"
        return results
    finally:
        unmount(where)


def row5_bit_flip():
    """Flip one bit in the last committed record, in the WAL and after a checkpoint."""
    results = {}
    for where_flipped in ("wal", "db"):
        d, path, db = store_with(10)
        if where_flipped == "db":
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # Keep the WAL on close, as after a crash (SQLite checkpoints and deletes it otherwise).
        target = path + "-wal" if where_flipped == "wal" else path
        size = os.path.getsize(target)
        with open(target, "r+b") as f:
            # A byte inside the last record's body: near the end of the WAL (its last frame),
            # or inside the last leaf page's cell content in the database file.
            offset = size - 100 if where_flipped == "wal" else find(path, RECORD[-64:])
            f.seek(offset)
            b = f.read(1)
            f.seek(offset)
            f.write(bytes([b[0] ^ 0x01]))
        crash_copy = d + "-crash"
        shutil.copytree(d, crash_copy)  # what a restarted process would find
        db.close()
        db = sqlite3.connect(os.path.join(crash_copy, "spool.db"))
        rows = db.execute("SELECT seq, body FROM log ORDER BY seq").fetchall()
        intact = sum(1 for _, body in rows if body == RECORD)
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        results[where_flipped] = (
            f"{len(rows)} of 10 records read, {intact} intact, integrity_check: {check}"
        )
        db.close()
        shutil.rmtree(d)
        shutil.rmtree(crash_copy)
    return results


def find(path, needle):
    with open(path, "rb") as f:
        data = f.read()
    return data.rindex(needle) + 10


def store_with(records):
    """A new store in a scratch directory with `records` commits, never checkpointed."""
    d = tempfile.mkdtemp(prefix="spike-")
    path = os.path.join(d, "spool.db")
    db = open_store(path)
    db.execute("PRAGMA wal_autocheckpoint=0")
    for _ in range(records):
        append(db, 1)
    return d, path, db


def row6_deleted_file():
    """The operator deletes the one file that is not the data (SQLite's -wal; our cursor)."""
    d, _, db = store_with(3)
    crash_copy = d + "-crash"
    shutil.copytree(d, crash_copy)
    db.close()
    os.remove(os.path.join(crash_copy, "spool.db-wal"))
    db = sqlite3.connect(os.path.join(crash_copy, "spool.db"))
    try:
        count = db.execute("SELECT count(*) FROM log").fetchone()[0]
        result = f"{count} of 3 committed records left"
    except sqlite3.Error as e:
        result = f"error: {e}"
    db.close()
    shutil.rmtree(d)
    shutil.rmtree(crash_copy)
    return result


def row7_unlinked():
    """The database file is unlinked while one process has it open; a second one starts."""
    d = tempfile.mkdtemp(prefix="spike-")
    path = os.path.join(d, "spool.db")
    first = open_store(path)
    append(first, 1)
    os.remove(path)
    second = open_store(path)
    append(second, 1)
    append(first, 1)  # the first writer goes on, into a file nobody can open again
    first.close()
    second.close()
    db = sqlite3.connect(path)
    count = db.execute("SELECT count(*) FROM log").fetchone()[0]
    db.close()
    shutil.rmtree(d)
    return f"{count} of 3 committed records findable after both stopped"


def throughput(directory, batch, seconds=3.0):
    """Commits of `batch` 2 KiB records for `seconds`: records/s and commits/s."""
    d = tempfile.mkdtemp(prefix="spike-", dir=directory)
    try:
        db = open_store(os.path.join(d, "spool.db"))
        commits = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            append(db, batch)
            commits += 1
            if commits % 64 == 0:
                forward(db, commits * batch - 32 * batch)
        took = time.monotonic() - start
        db.close()
        sqlite = (commits * batch / took, commits / took)
        fd = os.open(os.path.join(d, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        commits = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            os.write(fd, RECORD * batch)
            os.fdatasync(fd)
            commits += 1
        took = time.monotonic() - start
        os.close(fd)
        log = (commits * batch / took, commits / took)
        return sqlite, log
    finally:
        shutil.rmtree(d)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    print(f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=FULL")
    if what in ("faults", "all"):
        print("row 1, full disk (4 MiB tmpfs):", row1_full_disk())
        print("row 5, one bit flipped in the last committed record:", row5_bit_flip())
        print("row 6, the -wal file deleted after 3 commits:", row6_deleted_file())
        print("row 7, the file unlinked under a running writer:", row7_unlinked())
    if what in ("throughput", "all"):
        directory = os.environ.get("SPIKE_DIR", os.getcwd())
        for batch in (1, 16, 64):
            (s_rec, s_com), (l_rec, l_com) = throughput(directory, batch)
            print(
                f"batch {batch:>2}: SQLite {s_rec:>9,.0f} records/s ({s_com:,.0f} commits/s); "
                f"append + fdatasync {l_rec:>9,.0f} records/s ({l_com:,.0f} commits/s)"
            )


if __name__ == "__main__":
    main()
