package testenv

import (
	"context"
	"database/sql"
	_ "embed"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// SampleSchemaMySQL is the sample shop schema of sample_schema.sql in
// MySQL's dialect, with the same tables and the same numbers.
//
//go:embed sample_schema_mysql.sql
var SampleSchemaMySQL string

// MariaDBOptions configures StartMariaDB. The zero value is a server with
// a database "app" and the account root@'%' with a random password.
type MariaDBOptions struct {
	// Database is created after start; default "app".
	Database string
	// User is the account (User@'%', all privileges) tests and the gateway
	// use; default "root".
	User string
	// Password of User; default random. Every TCP account needs it
	// (mysql_native_password), so tests exercise real authentication.
	Password string
	// InitSQL runs in Database after it is created, e.g. SampleSchemaMySQL.
	// It may hold several statements separated by ';' (no DELIMITER).
	InitSQL string
	// RequireTLS sets require_secure_transport: TCP clients must use TLS.
	RequireTLS bool
	// Args are extra mariadbd options, e.g. "--local-infile=0".
	Args []string
}

// MariaDB is a running MariaDB server.
type MariaDB struct {
	Host     string // 127.0.0.1
	Port     int
	User     string
	Password string
	Database string
	// Dir holds the data directory (Dir/data), the Unix socket and the
	// server log (Dir/mariadb.log).
	Dir string
	// CertFile is the server's self-signed certificate (PEM), its own CA,
	// valid for 127.0.0.1 and localhost.
	CertFile string

	bin   string // mariadbd
	args  []string
	owner *dbOwner // non-nil when running as root

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartMariaDB initialises a data directory in a temporary directory,
// starts mariadbd on a free port of 127.0.0.1 with TLS on, sets the
// account's password, creates the database and runs InitSQL. t.Cleanup
// kills the server and removes the directory.
func StartMariaDB(t testing.TB, o MariaDBOptions) *MariaDB {
	t.Helper()
	server, installDB := mariadbBinaries(t)
	m := &MariaDB{Host: "127.0.0.1", User: o.User, Password: o.Password, Database: o.Database, bin: server}
	if m.User == "" {
		m.User = "root"
	}
	if m.Database == "" {
		m.Database = "app"
	}
	if m.Password == "" {
		m.Password = randomHex(16)
	}
	if os.Geteuid() == 0 {
		m.owner = lookupMySQLUser(t)
	}
	m.Dir = m.makeDir(t)
	t.Cleanup(func() { os.RemoveAll(m.Dir) })
	m.installDB(t, installDB)
	t.Cleanup(m.kill) // runs before the directory is removed

	m.args = append([]string{
		"--no-defaults",
		"--datadir=" + m.dataDir(),
		"--bind-address=127.0.0.1",
		"--socket=" + m.socket(),
		"--pid-file=" + filepath.Join(m.Dir, "mariadbd.pid"),
		"--tmpdir=" + m.tmpDir(t),
		"--log-error=" + m.logPath(),
		"--skip-name-resolve",
		"--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_general_ci",
		"--max-connections=200",
		"--max-allowed-packet=64M",
		// Durability is pointless for throwaway data and costs time.
		"--innodb-flush-log-at-trx-commit=0",
		"--skip-innodb-doublewrite",
		"--innodb-buffer-pool-size=64M",
		"--performance-schema=OFF",
		// TLS on, so upstream TLS modes are exercised for real.
		"--ssl-cert=" + m.CertFile,
		"--ssl-key=" + filepath.Join(m.Dir, "server.key"),
		"--ssl-ca=" + m.CertFile,
	}, o.Args...)
	if o.RequireTLS {
		m.args = append(m.args, "--require-secure-transport=ON")
	}

	// A probed free port can be taken before mariadbd binds it; only then
	// is another port worth a try.
	var err error
	for range 3 {
		m.Port = FreePort(t)
		if err = m.start(true); err == nil || !strings.Contains(err.Error(), "already in use") {
			break
		}
	}
	if err != nil {
		t.Fatalf("testenv: start mariadb: %v", err)
	}
	if o.InitSQL != "" {
		m.Exec(t, o.InitSQL)
	}
	return m
}

// Addr is the server's TCP address, "127.0.0.1:PORT".
func (m *MariaDB) Addr() string { return net.JoinHostPort(m.Host, strconv.Itoa(m.Port)) }

// DSN is a go-sql-driver/mysql data source name for Database as User over
// TCP without TLS (unless RequireTLS; then add tls=skip-verify).
func (m *MariaDB) DSN() string {
	return m.config(m.Database).FormatDSN()
}

func (m *MariaDB) config(db string) *mysql.Config {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = m.User, m.Password, "tcp", m.Addr(), db
	c.Timeout = 10 * time.Second
	return c
}

// Exec runs sql (one or more statements separated by ';') in Database
// and fails the test on error.
func (m *MariaDB) Exec(t testing.TB, sql string) {
	t.Helper()
	db := m.open(t, true)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := db.ExecContext(ctx, sql); err != nil {
		t.Fatalf("testenv: mariadb exec in %s: %v\nsql: %s", m.Database, err, tail([]byte(sql), 500))
	}
}

// QueryInt runs a query with a single integer result, such as
// "select count(*) from orders", and fails the test on error.
func (m *MariaDB) QueryInt(t testing.TB, sql string) int64 {
	t.Helper()
	var n int64
	m.queryRow(t, sql, &n)
	return n
}

// QueryString runs a query with a single text result, such as
// "select version()", and fails the test on error.
func (m *MariaDB) QueryString(t testing.TB, query string) string {
	t.Helper()
	var s sql.NullString
	m.queryRow(t, query, &s)
	return s.String
}

func (m *MariaDB) queryRow(t testing.TB, query string, dst any) {
	t.Helper()
	db := m.open(t, false)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.QueryRowContext(ctx, query).Scan(dst); err != nil {
		t.Fatalf("testenv: mariadb query %q: %v", query, err)
	}
}

func (m *MariaDB) open(t testing.TB, multi bool) *sql.DB {
	t.Helper()
	c := m.config(m.Database)
	c.MultiStatements = multi
	c.TLSConfig = "preferred"
	conn, err := mysql.NewConnector(c)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	return db
}

// Stop shuts the server down (SIGTERM, data kept), for tests of an
// upstream that goes away.
func (m *MariaDB) Stop(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		t.Fatalf("testenv: mariadb on port %d is not running", m.Port)
	}
	if terminate(m.cmd, m.exited, 60*time.Second) {
		t.Errorf("testenv: mariadbd ignored SIGTERM for 60s and was killed")
	}
	m.cmd = nil
}

// Start starts a stopped server again on the same port with the same data.
func (m *MariaDB) Start(t testing.TB) {
	t.Helper()
	if err := m.start(false); err != nil {
		t.Fatalf("testenv: restart mariadb: %v", err)
	}
}

// start runs mariadbd and waits until it serves clients. The first start
// also secures the accounts and creates the database.
func (m *MariaDB) start(first bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("mariadb on port %d is already running", m.Port)
	}
	var offset int64
	if fi, err := os.Stat(m.logPath()); err == nil {
		offset = fi.Size()
	}
	cmd := exec.Command(m.bin, append(m.args, "--port="+strconv.Itoa(m.Port))...)
	cmd.Dir = m.Dir
	// mariadbd writes its log to --log-error; anything before that (a bad
	// option) goes to stderr, kept in the same file.
	logf, err := os.OpenFile(m.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	m.chown(nil, m.logPath())
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithParent(cmd)
	if m.owner != nil {
		// mariadbd refuses to run as root. Dropping to the mysql user in
		// the child (rather than with --user) keeps the parent-death
		// signal, which a set-uid in mariadbd itself would clear.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(m.owner.uid), Gid: uint32(m.owner.gid)}
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	fail := func(err error) error {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%v; log:\n%s", err, m.logSince(offset))
	}
	if err := m.waitReady(exited, first); err != nil {
		return fail(err)
	}
	if first {
		if err := m.secure(); err != nil {
			return fail(err)
		}
	}
	m.cmd, m.exited = cmd, exited
	return nil
}

// waitReady polls with a real client over the Unix socket until the server
// answers. Before secure runs, root@localhost has no password.
func (m *MariaDB) waitReady(exited <-chan struct{}, first bool) error {
	return waitReady("mariadbd", exited, 60*time.Second, func() error { return m.ping(first) })
}

func (m *MariaDB) socketConfig(first bool) *mysql.Config {
	c := mysql.NewConfig()
	c.User, c.Net, c.Addr = "root", "unix", m.socket()
	if !first {
		c.Passwd = m.Password
	}
	c.Timeout = 2 * time.Second
	return c
}

func (m *MariaDB) ping(first bool) error {
	conn, err := mysql.NewConnector(m.socketConfig(first))
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// secure gives every root account and User@'%' the password, drops the
// accounts mariadb-install-db made for other hosts, and creates the
// database.
func (m *MariaDB) secure() error {
	conn, err := mysql.NewConnector(m.socketConfig(true))
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	db.SetMaxOpenConns(1) // one session, so the statements run in order
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, "SELECT User, Host FROM mysql.user WHERE User IN ('root', '')")
	if err != nil {
		return err
	}
	var stmts []string
	for rows.Next() {
		var u, h string
		if err := rows.Scan(&u, &h); err != nil {
			rows.Close()
			return err
		}
		if u == "root" && h == "localhost" {
			continue
		}
		stmts = append(stmts, fmt.Sprintf("DROP USER %s@%s", quoteString(u), quoteString(h)))
	}
	rows.Close()
	pw := quoteString(m.Password)
	stmts = append(stmts,
		fmt.Sprintf("CREATE USER %s@'%%' IDENTIFIED BY %s", quoteString(m.User), pw),
		fmt.Sprintf("GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION", quoteString(m.User)),
		"CREATE DATABASE IF NOT EXISTS "+quoteIdent(m.Database),
		// Last: it is the account this connection uses.
		"ALTER USER root@localhost IDENTIFIED BY "+pw,
	)
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// kill is the cleanup: no clean shutdown, since the data is thrown away.
func (m *MariaDB) kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		_ = m.cmd.Process.Kill()
		<-m.exited
		m.cmd = nil
	}
}

func (m *MariaDB) dataDir() string { return filepath.Join(m.Dir, "data") }
func (m *MariaDB) socket() string  { return filepath.Join(m.Dir, "mysqld.sock") }
func (m *MariaDB) logPath() string { return filepath.Join(m.Dir, "mariadb.log") }

func (m *MariaDB) logSince(offset int64) string {
	b, err := os.ReadFile(m.logPath())
	if err != nil {
		return err.Error()
	}
	if offset <= int64(len(b)) {
		b = b[offset:]
	}
	return tail(b, 4000)
}

// makeDir creates the server's directory, owned by the mysql user when we
// are root. Like the Postgres one it is not t.TempDir: the mysql user
// must be able to enter it, and the socket path must stay short.
func (m *MariaDB) makeDir(t testing.TB) string {
	t.Helper()
	base := os.TempDir()
	if m.owner != nil && !othersCanEnter(base) {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "airlock-mariadb-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	m.chown(t, dir)
	return dir
}

// tmpDir is the server's own temporary directory, made on first use.
func (m *MariaDB) tmpDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(m.Dir, "tmp")
	if _, err := os.Stat(dir); err != nil {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		m.chown(t, dir)
	}
	return dir
}

func (m *MariaDB) installDB(t testing.TB, installDB string) {
	t.Helper()
	args := []string{
		"--no-defaults", "--datadir=" + m.dataDir(),
		// root@localhost without a password, so secure can log in over
		// the socket and set one.
		"--auth-root-authentication-method=normal",
		"--skip-test-db", "--skip-name-resolve",
	}
	if m.owner != nil {
		args = append(args, "--user=mysql")
	}
	cmd := exec.Command(installDB, args...)
	cmd.Dir = m.Dir
	// Its own temporary directory: bootstrap servers of parallel test
	// processes otherwise share /tmp and trip over each other's
	// temporary tables.
	cmd.Env = append(os.Environ(), "TMPDIR="+m.tmpDir(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: mariadb-install-db: %v\n%s", err, tail(out, 4000))
	}
	cert, key := selfSignedCert(t)
	m.CertFile = filepath.Join(m.Dir, "server.crt")
	m.writeFile(t, m.CertFile, cert, 0o644)
	m.writeFile(t, filepath.Join(m.Dir, "server.key"), key, 0o600)
}

func (m *MariaDB) writeFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	m.chown(t, path)
}

// chown gives path to the mysql user when we are root. t may be nil
// (inside start, which reports errors itself); a failure then shows up as
// mariadbd failing to open the file.
func (m *MariaDB) chown(t testing.TB, path string) {
	if m.owner == nil {
		return
	}
	if err := os.Chown(path, m.owner.uid, m.owner.gid); err != nil && t != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func lookupMySQLUser(t testing.TB) *dbOwner {
	t.Helper()
	u, err := user.Lookup("mysql")
	if err != nil {
		t.Fatalf("testenv: running as root needs the mysql user to run mariadbd: %v "+
			"(it comes with: apt-get install -y mariadb-server)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &dbOwner{uid, gid}
}

var mariadbInstall sync.Mutex

// mariadbBinaries finds mariadbd and mariadb-install-db, installing
// mariadb-server when they are missing and we are root. Debian keeps
// mariadbd in /usr/sbin, which is not on every PATH.
func mariadbBinaries(t testing.TB) (server, installDB string) {
	t.Helper()
	mariadbInstall.Lock()
	defer mariadbInstall.Unlock()
	find := func() (string, string) {
		return lookPathOrSbin("mariadbd"), lookPathOrSbin("mariadb-install-db")
	}
	if server, installDB = find(); server != "" && installDB != "" {
		return server, installDB
	}
	const hint = "missing mariadbd: install with: apt-get install -y mariadb-server"
	if os.Geteuid() != 0 {
		t.Fatalf("testenv: %s", hint)
	}
	if err := aptInstall("mariadb-server"); err != nil {
		t.Fatalf("testenv: %s (installing it failed: %v)", hint, err)
	}
	if server, installDB = find(); server == "" || installDB == "" {
		t.Fatalf("testenv: %s (installed, but mariadbd or mariadb-install-db is still not found)", hint)
	}
	return server, installDB
}

func lookPathOrSbin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	return ""
}

// quoteString quotes s as a MySQL string literal (the server runs with the
// default sql_mode, where backslash escapes).
func quoteString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\x00", `\0`)
	return "'" + r.Replace(s) + "'"
}

func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(s, "`", "``") + "`"
}
