"""psycopg 3 (PyPI) against `weir serve --pg-listen`: DDL, parameters (text and binary, typed
and prepared server-side), typed results, errors with SQLSTATE and position, sessions that see
each other's DDL, a materialized view's pull query, SUBSCRIBE receiving rows inserted
afterwards (COPY (SUBSCRIBE TO …) TO STDOUT), and a push query (SELECT … EMIT CHANGES).
Prints `ok` when every check passed.

Usage: python pg_psycopg.py HOST:PORT
"""
import datetime
import sys
import threading
import time

import psycopg

host, port = sys.argv[1].rsplit(":", 1)
DSN = f"host={host} port={port} user=weir dbname=weir connect_timeout=10"


def connect(**kw):
    return psycopg.connect(DSN, autocommit=True, **kw)


def eventually(check, what, timeout=60.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: still {last!r} after {timeout}s")


conn = connect()
cur = conn.cursor()
cur.execute(
    "CREATE STREAM bids (auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP) "
    "WITH (partitions = 2)"
)
assert cur.statusmessage == "CREATE STREAM", cur.statusmessage

# Parameters: typed text values, a datetime, NULL, and a string with a quote.
t0 = datetime.datetime(2026, 1, 1, 0, 0, 1)
for i in range(10):
    cur.execute(
        "INSERT INTO bids VALUES (%s, %s, %s, %s)",
        (i % 3, 100 + i, 1000 * (i + 1), t0 + datetime.timedelta(seconds=i)),
    )
    assert cur.statusmessage == "INSERT 0 1", cur.statusmessage
cur.execute("SELECT auction, price, ts FROM bids WHERE auction = %s AND price >= %s ORDER BY price",
            (1, 2000))
rows = cur.fetchall()
assert rows == [(1, 2000, t0 + datetime.timedelta(seconds=1)),
                (1, 5000, t0 + datetime.timedelta(seconds=4)),
                (1, 8000, t0 + datetime.timedelta(seconds=7))], rows
assert [c.name for c in cur.description] == ["auction", "price", "ts"]
assert [c.type_code for c in cur.description] == [20, 20, 1114], cur.description
cur.execute("SELECT %s::text AS s, %s AS n", ("it's", None))
assert cur.fetchone() == ("it's", None)

# Binary parameters and binary results.
cur.execute("SELECT COUNT(*) FROM bids WHERE auction = %b", (2,))
assert cur.fetchone() == (3,)
with conn.cursor(binary=True) as bcur:
    bcur.execute("SELECT auction, price, ts FROM bids WHERE price = %s", (10000,))
    assert bcur.fetchall() == [(0, 10000, t0 + datetime.timedelta(seconds=9))]

# Prepared server-side after the threshold: the same statement many times.
for i in range(12):
    cur.execute("SELECT COUNT(*) FROM bids WHERE price > %s", (i * 1000,), prepare=i > 2)
    assert cur.fetchone() == (10 - i if i <= 10 else 0,)

# Errors: SQLSTATE and the position psql marks.
try:
    cur.execute("SELECT prise FROM bids")
    raise AssertionError("no error")
except psycopg.Error as e:
    assert e.sqlstate == "42000", e.sqlstate
    assert "did you mean `price`" in str(e), str(e)
    assert e.diag.statement_position == "8", e.diag.statement_position
try:
    cur.execute("SELECT * FROM bidz")
    raise AssertionError("no error")
except psycopg.errors.UndefinedTable as e:
    assert "did you mean `bids`" in str(e), str(e)

# A transaction block (psycopg's default) works; statements take effect as they run.
with psycopg.connect(DSN) as tconn:
    with tconn.cursor() as tcur:
        tcur.execute("SELECT COUNT(*) FROM bids")
        assert tcur.fetchone() == (10,)
    tconn.commit()

# What one session creates, another sees.
other = connect()
cur.execute("CREATE STREAM later (a BIGINT)")
other.execute("INSERT INTO later VALUES (1), (2)")
assert other.execute("SELECT SUM(a) FROM later").fetchone() == (3,)

# The extended protocol (psycopg's) runs one statement at a time, as Postgres: a script is
# refused before any of it runs.
try:
    cur.execute("INSERT INTO later VALUES (%s); INSERT INTO later VALUES (20)", (10,))
    raise AssertionError("no error")
except psycopg.Error as e:
    assert "one statement" in str(e), str(e)
assert other.execute("SELECT SUM(a) FROM later").fetchone() == (3,)
# A negative parameter after a minus stays a number (not a `--` comment).
assert cur.execute("SELECT 10-%s AS d", (-5,)).fetchone() == (15,)

# A materialized view and its pull query.
cur.execute(
    "CREATE MATERIALIZED VIEW stats AS SELECT auction, COUNT(*) AS n, MAX(price) AS hi "
    "FROM bids GROUP BY auction"
)
eventually(lambda: cur.execute("SELECT n, hi FROM stats WHERE auction = %s", (1,)).fetchall()
           == [(3, 8000)], "the view's row for auction 1")

# SUBSCRIBE: rows inserted after it started, with their op. Leaving the COPY block by an
# exception makes psycopg send a cancel request, which ends the subscription; a cancel from
# another thread does too.
class Enough(Exception):
    pass


def subscribe(request, want, out, ready, conns):
    c = connect()
    conns.append(c)
    try:
        with c.cursor().copy(f"COPY ({request}) TO STDOUT") as copy:
            ready.set()
            for row in copy.rows():
                out.append(row)
                if len(out) >= want:
                    raise Enough()
    except Enough:
        pass
    except psycopg.errors.QueryCanceled:
        out.append("canceled")
    # The connection is usable again.
    assert c.execute("SELECT 1").fetchone() == (1,)
    c.close()


got, ready = [], threading.Event()
t = threading.Thread(target=subscribe, args=("SUBSCRIBE TO bids", 2, got, ready, []), daemon=True)
t.start()
ready.wait(30)
time.sleep(0.5)
cur.execute("INSERT INTO bids VALUES (7, 1, 70, '2026-01-01 00:01:00'), (8, 1, 80, '2026-01-01 00:01:01')")
t.join(60)
assert not t.is_alive(), "the subscriber did not end"
assert sorted(got) == [("insert", "7", "1", "70", "2026-01-01 00:01:00"),
                       ("insert", "8", "1", "80", "2026-01-01 00:01:01")], got

# A view: its current rows first, then changes (an update of auction 7); a cancel ends it.
vgot, ready, conns = [], threading.Event(), []
t = threading.Thread(target=subscribe, args=("SUBSCRIBE stats", 1000, vgot, ready, conns), daemon=True)
t.start()
ready.wait(30)
eventually(lambda: {r[1] for r in vgot} >= {"0", "1", "2", "7", "8"}, "the view's rows")
cur.execute("INSERT INTO bids VALUES (7, 2, 700, '2026-01-01 00:02:00')")
eventually(lambda: ("update_after", "7", "2", "700") in vgot, "auction 7's update")
assert all(r[0] in ("insert", "update_after") for r in vgot), vgot
conns[0].cancel_safe()
t.join(30)
assert not t.is_alive() and vgot[-1] == "canceled", vgot[-3:]

# A push query: its result over what the log holds, then its changes — an updating count
# retracts the old row (update_before) — until canceled; its transient query goes with it.
pgot, ready, conns = [], threading.Event(), []
push = ("SELECT auction, COUNT(*) AS n, MAX(price) * 2 AS hi2 FROM bids "
        "WHERE auction = 7 GROUP BY auction EMIT CHANGES")
t = threading.Thread(target=subscribe, args=(push, 1000, pgot, ready, conns), daemon=True)
t.start()
ready.wait(30)
eventually(lambda: ("update_after", "7", "2", "1400") in pgot or ("insert", "7", "2", "1400") in pgot,
           "the push query's result so far")
shown = cur.execute("SHOW QUERIES").fetchall()
assert any(r[0].startswith("_push_") for r in shown), shown
cur.execute("INSERT INTO bids VALUES (7, 3, 900, '2026-01-01 00:03:00')")
eventually(lambda: ("update_after", "7", "3", "1800") in pgot, "the push query's change")
assert ("update_before", "7", "2", "1400") in pgot, pgot
conns[0].cancel_safe()
t.join(30)
assert not t.is_alive() and pgot[-1] == "canceled", pgot[-3:]
eventually(lambda: not any(r[0].startswith("_push_") for r in cur.execute("SHOW QUERIES").fetchall()),
           "the push query's end")

print("ok")
