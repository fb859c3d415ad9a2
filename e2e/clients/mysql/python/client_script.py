"""The MySQL client-matrix script run through airlock with PyMySQL.

Run by e2e/mysql_clients_test.go with Debian's python3 and python3-pymysql.
The connection comes from MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_PWD
and MYSQL_DATABASE; CLIENT_TAG makes the rows this client writes its own.
Each step prints one line, "step<TAB>value": a result, or
"ERROR <code>: <message>". The Go test judges the values. PyMySQL
interpolates parameters into the text (COM_QUERY).
"""

import os
import ssl

import pymysql

TAG = os.environ["CLIENT_TAG"]
EMAIL = TAG + "@example.com"


def out(step, value):
    print(f"{step}\t{value}", flush=True)


def step(conn, name, sql, args=None, fetch=True):
    try:
        with conn.cursor() as cur:
            n = cur.execute(sql, args)
            out(name, cur.fetchone()[0] if fetch else n)
    except pymysql.MySQLError as e:
        out(name, f"ERROR {e.args[0]}: {e.args[1]}")


def main():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = pymysql.connect(
        host=os.environ["MYSQL_HOST"], port=int(os.environ["MYSQL_PORT"]),
        user=os.environ["MYSQL_USER"], password=os.environ["MYSQL_PWD"],
        database=os.environ["MYSQL_DATABASE"], ssl=ctx, autocommit=True,
        connect_timeout=10)
    step(conn, "count", "select count(*) from orders")
    step(conn, "param", "select count(*) from orders where status = %s", ("failed",))
    step(conn, "insert", "insert into customers (name, email) values (%s, %s)", (TAG, EMAIL), fetch=False)
    step(conn, "update", "update customers set name = concat(name, ' (updated)') where email = %s", (EMAIL,), fetch=False)
    conn.begin()
    with conn.cursor() as cur:
        out("tx_insert", cur.execute("insert into customers (name, email) values (%s, %s)", (TAG + " rolled back", TAG + "-rb@example.com")))
    conn.rollback()
    out("rollback", "ok")
    step(conn, "server_error", "select * from no_such_table")
    step(conn, "unique", "insert into customers (name, email) values (%s, %s)", (TAG, EMAIL), fetch=False)
    step(conn, "recovered", "select count(*) from customers where email = %s", (EMAIL,))
    step(conn, "refused", "drop table orders", fetch=False)
    step(conn, "after", "select 'after refusal'")
    # A streamed (unbuffered) result: rows read as they arrive.
    with conn.cursor(pymysql.cursors.SSCursor) as cur:
        cur.execute("select seq from seq_1_to_5000")
        out("streamed", sum(r[0] for r in cur))
    out("version", conn.get_server_info())
    conn.close()


main()
