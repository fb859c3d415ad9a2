// The MySQL client-matrix script run through airlock with mysql2 (the npm
// package, pinned in package.json and package-lock.json beside this file),
// with its prepared statements (execute: COM_STMT_PREPARE and
// COM_STMT_EXECUTE). Run by e2e/mysql_clients_test.go. The connection
// comes from MYSQL_* variables; CLIENT_TAG makes the rows this client
// writes its own. Each step prints one line, "step<TAB>value": a result,
// or "ERROR <code>: <message>". The Go test judges the values.
'use strict';

const mysql = require('mysql2/promise');

const tag = process.env.CLIENT_TAG;
const email = tag + '@example.com';

function out(step, value) {
  process.stdout.write(`${step}\t${value}\n`);
}

// step runs one statement (execute: a server-side prepared statement;
// query: the text protocol) and prints its outcome.
async function step(c, name, sql, values, fetch = true, how = 'execute') {
  try {
    const [r] = await c[how](sql, values);
    out(name, fetch ? Object.values(r[0])[0] : r.affectedRows);
  } catch (e) {
    out(name, `ERROR ${e.errno}: ${e.sqlMessage || e.message}`);
  }
}

async function main() {
  const c = await mysql.createConnection({
    host: process.env.MYSQL_HOST,
    port: Number(process.env.MYSQL_PORT),
    user: process.env.MYSQL_USER,
    password: process.env.MYSQL_PWD,
    database: process.env.MYSQL_DATABASE,
    ssl: { rejectUnauthorized: false },
    connectTimeout: 10000,
  });
  await step(c, 'count', 'select count(*) from orders', []);
  await step(c, 'param', 'select count(*) from orders where status = ?', ['failed']);
  await step(c, 'insert', 'insert into customers (name, email) values (?, ?)', [tag, email], false);
  await step(c, 'update', "update customers set name = concat(name, ' (updated)') where email = ?", [email], false);
  await c.beginTransaction();
  const [r] = await c.execute('insert into customers (name, email) values (?, ?)', [tag + ' rolled back', tag + '-rb@example.com']);
  out('tx_insert', r.affectedRows);
  await c.rollback();
  out('rollback', 'ok');
  await step(c, 'server_error', 'select * from no_such_table', [], true, 'query');
  await step(c, 'unique', 'insert into customers (name, email) values (?, ?)', [tag, email], false);
  await step(c, 'recovered', 'select count(*) from customers where email = ?', [email]);
  await step(c, 'refused', 'drop table orders', [], false, 'query');
  await step(c, 'refused_prepare', 'drop table customers', [], false);
  await step(c, 'after', "select 'after refusal'", []);
  // The same prepared statement three times with other values.
  const counts = [];
  for (const s of ['paid', 'shipped', 'new']) {
    const [rows] = await c.execute('select count(*) as n from orders where status = ?', [s]);
    counts.push(rows[0].n);
  }
  out('prepared_again', counts.join(','));
  out('version', c.connection._handshakePacket.serverVersion);
  await c.end();
}

main().catch((e) => {
  process.stderr.write(String(e.stack || e) + '\n');
  process.exit(1);
});
