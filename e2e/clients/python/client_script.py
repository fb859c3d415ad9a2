"""The client-matrix script run through airlock with psycopg2 (libpq).

Run by e2e/postgres_clients_test.go with Debian's python3 and
python3-psycopg2. The connection comes from the standard PG* variables
(libpq reads them); CLIENT_TAG makes the rows this client writes its own.
Each step prints one line, "step<TAB>value": a result, or
"ERROR <sqlstate>: <message>". The Go test judges the values.
"""

import io
import os
import sys

import psycopg2

TAG = os.environ["CLIENT_TAG"]
EMAIL = TAG + "@example.com"


def out(step, value):
    print(f"{step}\t{value}", flush=True)


def err(e):
    msg = e.diag.message_primary or str(e).strip().splitlines()[0]
    return f"ERROR {e.pgcode}: {msg}"


def step(conn, name, sql, args=None, fetch=True):
    """Runs one statement in autocommit mode and prints its outcome."""
    cur = conn.cursor()
    try:
        cur.execute(sql, args)
        out(name, cur.fetchone()[0] if fetch else cur.rowcount)
    except psycopg2.Error as e:
        out(name, err(e))
    finally:
        cur.close()


def script(conn):
    conn.autocommit = True
    step(conn, "count", "select count(*) from orders")
    step(conn, "param", "select count(*) from orders where status = %s", ("failed",))
    step(conn, "insert", "insert into customers (name, email) values (%s, %s)", (TAG, EMAIL), fetch=False)
    step(conn, "update", "update customers set name = name || ' (updated)' where email = %s", (EMAIL,), fetch=False)

    # A transaction rolled back: psycopg2 opens it itself when autocommit
    # is off.
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute("insert into customers (name, email) values (%s, %s)", (TAG + " rolled back", TAG + "-rb@example.com"))
    out("tx_insert", cur.rowcount)
    conn.rollback()
    out("rollback", "ok")
    conn.autocommit = True

    step(conn, "div0", "select 1/0")
    step(conn, "unique", "insert into customers (name, email) values (%s, %s)", (TAG, EMAIL), fetch=False)
    step(conn, "recovered", "select count(*) from customers where email = %s", (EMAIL,))
    step(conn, "refused", "drop table orders", fetch=False)
    step(conn, "after", "select 'after refusal'")


def server_side_cursor(conn):
    """A named cursor: DECLARE ... CURSOR, then FETCHes of itersize rows,
    inside the transaction psycopg2 opens for it."""
    conn.autocommit = False
    cur = conn.cursor(name="airlock_orders")
    cur.itersize = 60
    cur.execute("select id, status from orders order by id")
    n = 0
    ids = 0
    for row in cur:
        n += 1
        ids += row[0]
    cur.close()
    conn.commit()
    out("cursor_rows", n)
    out("cursor_id_sum", ids)

    # A refusal while a server-side cursor is open: the transaction is
    # aborted as a server error would abort it; ROLLBACK recovers.
    cur = conn.cursor(name="airlock_refused")
    cur.itersize = 10
    cur.execute("select id from orders order by id")
    first = cur.fetchmany(5)
    plain = conn.cursor()
    try:
        plain.execute("drop table orders")
        out("cursor_refused", "not refused")
    except psycopg2.Error as e:
        out("cursor_refused", err(e))
    conn.rollback()
    out("cursor_first", len(first))
    conn.autocommit = True
    step(conn, "cursor_after", "select 'after cursor'")


def copy(conn):
    """COPY FROM STDIN and COPY TO STDOUT through libpq's copy API."""
    conn.autocommit = True
    cur = conn.cursor()
    rows = "".join(f"{TAG} copy {i},{TAG}-copy{i}@example.com\n" for i in range(7))
    cur.copy_expert("copy customers (name, email) from stdin with (format csv)", io.StringIO(rows))
    out("copy_in", cur.rowcount)
    buf = io.StringIO()
    cur.copy_expert(f"copy (select email from customers where email like '{TAG}-copy%' order by id) to stdout", buf)
    out("copy_out", len(buf.getvalue().splitlines()))
    cur.close()


def main():
    conn = psycopg2.connect("")  # everything from PG* variables
    script(conn)
    server_side_cursor(conn)
    copy(conn)
    conn.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # an unexpected failure: say what, exit non-zero
        print(f"FATAL\t{type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
