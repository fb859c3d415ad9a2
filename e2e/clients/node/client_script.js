// The client-matrix script run through airlock with node-postgres (the npm
// package pg, pinned in package.json and package-lock.json beside this
// file). Run by e2e/postgres_clients_test.go. The connection comes from
// PG* variables; CLIENT_TAG makes the rows this client writes its own.
// Each step prints one line, "step<TAB>value": a result, or
// "ERROR <sqlstate>: <message>". The Go test judges the values.
'use strict';

const { Client } = require('pg');

const tag = process.env.CLIENT_TAG;
const email = tag + '@example.com';

function out(step, value) {
  process.stdout.write(`${step}\t${value}\n`);
}

function err(e) {
  return `ERROR ${e.code}: ${String(e.message).split('\n')[0]}`;
}

// step runs one query (parameterized ones go through the extended
// protocol, the others through the simple one) and prints its outcome.
async function step(c, name, query, values, fetch = true) {
  try {
    const r = await c.query(query, values);
    out(name, fetch ? Object.values(r.rows[0])[0] : r.rowCount);
  } catch (e) {
    out(name, err(e));
  }
}

async function script(c) {
  await step(c, 'count', 'select count(*) from orders');
  await step(c, 'param', 'select count(*) from orders where status = $1', ['failed']);
  await step(c, 'insert', 'insert into customers (name, email) values ($1, $2)', [tag, email], false);
  await step(c, 'update', "update customers set name = name || ' (updated)' where email = $1", [email], false);

  await c.query('begin');
  const r = await c.query('insert into customers (name, email) values ($1, $2)', [tag + ' rolled back', tag + '-rb@example.com']);
  out('tx_insert', r.rowCount);
  await c.query('rollback');
  out('rollback', 'ok');

  await step(c, 'div0', 'select 1/0');
  await step(c, 'unique', 'insert into customers (name, email) values ($1, $2)', [tag, email], false);
  await step(c, 'recovered', 'select count(*) from customers where email = $1', [email]);
  await step(c, 'refused', 'drop table orders', undefined, false);
  await step(c, 'after', "select 'after refusal'");
}

// named runs a named prepared statement several times: node-postgres
// parses it once per connection, then only binds and executes it, so the
// gateway must reuse the decision it made at Parse.
async function named(c) {
  const results = [];
  for (let i = 0; i < 3; i++) {
    const r = await c.query({ name: 'orders_by_status', text: 'select count(*) from orders where status = $1', values: ['paid'] });
    results.push(r.rows[0].count);
  }
  out('named', results.join(','));
  // A refused named statement: refused at Parse, again at every retry,
  // and the connection stays usable.
  for (let i = 0; i < 2; i++) {
    try {
      await c.query({ name: 'dropper', text: 'drop table orders' });
      out('named_refused', 'not refused');
    } catch (e) {
      out('named_refused', err(e));
    }
  }
  await step(c, 'named_after', 'select count(*) from orders where status = $1', ['new']);
}

async function main() {
  const c = new Client({
    // The gateway's certificate is self-signed in tests: encrypt, do not
    // verify (libpq's sslmode=require).
    ssl: { rejectUnauthorized: false },
  });
  await c.connect();
  await script(c);
  await named(c);
  await c.end();
}

main().catch((e) => {
  process.stderr.write(`FATAL\t${e.stack || e}\n`);
  process.exit(1);
});
