package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresOptions configures StartPostgres. The zero value is a server
// with a database "app" owned by superuser "postgres" with a random
// password.
type PostgresOptions struct {
	// Database is created after start; default "app".
	Database string
	// User is the superuser's name; default "postgres".
	User string
	// Password of User; default random. TCP connections must use it
	// (scram-sha-256), so tests exercise real password authentication.
	Password string
	// InitSQL runs in Database after it is created, e.g. SampleSchema.
	InitSQL string
	// Version is a major version such as "15" to use
	// /usr/lib/postgresql/VERSION; "" uses whatever is installed.
	Version string
}

// Postgres is a running PostgreSQL server.
type Postgres struct {
	Host     string // 127.0.0.1
	Port     int
	User     string
	Password string
	Database string
	// Dir holds the data directory (Dir/data), the Unix socket and the
	// server log (Dir/postgres.log).
	Dir string
	// CertFile is the server's self-signed certificate (PEM). It is its
	// own CA, so clients can verify the server with it (verify-full works
	// for host 127.0.0.1 and localhost).
	CertFile string

	binDir string
	owner  *dbOwner // non-nil when running as root

	mu      sync.Mutex
	running bool
}

// dbOwner is the unprivileged account that owns the cluster when the test
// runs as root: postgres refuses to run as root.
type dbOwner struct{ uid, gid int }

// StartPostgres creates a cluster in a temporary directory, starts it on a
// free port of 127.0.0.1 with TLS on, creates the database and runs
// InitSQL. t.Cleanup stops the server and removes the directory.
func StartPostgres(t testing.TB, o PostgresOptions) *Postgres {
	t.Helper()
	p := &Postgres{
		Host:     "127.0.0.1",
		User:     o.User,
		Password: o.Password,
		Database: o.Database,
		binDir:   postgresBinDir(t, o.Version),
	}
	if p.User == "" {
		p.User = "postgres"
	}
	if p.Database == "" {
		p.Database = "app"
	}
	if p.Password == "" {
		p.Password = randomHex(16)
	}
	if os.Geteuid() == 0 {
		p.owner = lookupDBOwner(t)
	}
	p.Dir = p.makeDir(t)
	t.Cleanup(func() { os.RemoveAll(p.Dir) })
	p.initdb(t)
	t.Cleanup(p.stopImmediate) // runs before the directory is removed

	// A probed free port can be taken before postgres binds it; only then
	// is another port worth a try.
	var err error
	for range 3 {
		p.Port = FreePort(t)
		p.writeConf(t)
		if err = p.start(); err == nil || !strings.Contains(err.Error(), "already in use") {
			break
		}
	}
	if err != nil {
		t.Fatalf("testenv: start postgres: %v", err)
	}

	if p.Database != "postgres" {
		p.exec(t, "postgres", "CREATE DATABASE "+pgx.Identifier{p.Database}.Sanitize())
	}
	if o.InitSQL != "" {
		p.Exec(t, o.InitSQL)
	}
	return p
}

// Addr is the server's TCP address, "127.0.0.1:PORT".
func (p *Postgres) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// DSN is a URL for Database as User, without TLS.
func (p *Postgres) DSN() string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(p.User, p.Password),
		Host:     p.Addr(),
		Path:     "/" + p.Database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Exec runs sql (one or more statements) in Database and fails the test
// on error.
func (p *Postgres) Exec(t testing.TB, sql string) {
	t.Helper()
	p.exec(t, p.Database, sql)
}

// QueryInt runs a query with a single integer result, such as
// "select count(*) from orders", and fails the test on error.
func (p *Postgres) QueryInt(t testing.TB, sql string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := p.connect(t, ctx, p.Database)
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("testenv: postgres query %q: %v", sql, err)
	}
	return n
}

// Stop shuts the server down (fast mode: clients are disconnected, data is
// kept), for tests of an upstream that goes away.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		t.Fatalf("testenv: postgres on port %d is not running", p.Port)
	}
	if out, err := p.pgctl("stop", "-m", "fast"); err != nil {
		t.Fatalf("testenv: stop postgres: %v\n%s", err, out)
	}
	p.running = false
}

// Start starts a stopped server again on the same port with the same data.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	if err := p.start(); err != nil {
		t.Fatalf("testenv: restart postgres: %v", err)
	}
}

func (p *Postgres) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		return fmt.Errorf("postgres on port %d is already running", p.Port)
	}
	logPath := filepath.Join(p.Dir, "postgres.log")
	var offset int64
	if fi, err := os.Stat(logPath); err == nil {
		offset = fi.Size()
	}
	if out, err := p.pgctl("start", "-l", logPath, "-t", "60"); err != nil {
		log, _ := os.ReadFile(logPath)
		if offset <= int64(len(log)) {
			log = log[offset:]
		}
		return fmt.Errorf("%v\n%s\nserver log:\n%s", err, out, tail(log, 4000))
	}
	p.running = true
	return nil
}

// stopImmediate is the cleanup: no checkpoint, since the data is thrown
// away.
func (p *Postgres) stopImmediate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		_, _ = p.pgctl("stop", "-m", "immediate")
		p.running = false
	}
}

func (p *Postgres) dataDir() string { return filepath.Join(p.Dir, "data") }

// pgctl runs pg_ctl ACTION -w -D DATA ARGS as the cluster's owner.
func (p *Postgres) pgctl(action string, args ...string) (string, error) {
	args = append([]string{action, "-w", "-D", p.dataDir()}, args...)
	cmd := p.command(filepath.Join(p.binDir, "pg_ctl"), args...)
	// The postmaster pg_ctl leaves behind writes to the log file, not to
	// our pipe; WaitDelay guards against a build where it would keep the
	// pipe open.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// command runs a server program as the cluster's owner: through runuser
// when we are root, directly otherwise.
func (p *Postgres) command(prog string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if p.owner != nil {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", prog}, args...)...)
	} else {
		cmd = exec.Command(prog, args...)
	}
	// initdb and postgres fail when they cannot read the working
	// directory, which as the postgres user may be a root-only test dir.
	cmd.Dir = p.Dir
	return cmd
}

// makeDir creates the cluster's directory, owned by the cluster's owner.
// It is not t.TempDir: that lives under a 0700 root-owned directory the
// postgres user cannot enter, and its long path can exceed the 107-byte
// limit of the Unix socket path.
func (p *Postgres) makeDir(t testing.TB) string {
	t.Helper()
	base := os.TempDir()
	if p.owner != nil && !othersCanEnter(base) {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "airlock-pg-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	p.chown(t, dir)
	return dir
}

func (p *Postgres) initdb(t testing.TB) {
	t.Helper()
	pwfile := filepath.Join(p.Dir, "pwfile")
	p.writeFile(t, pwfile, p.Password+"\n", 0o600)
	defer os.Remove(pwfile)
	// Local (socket) connections are trusted: the socket sits in a 0700
	// directory. TCP connections, which tests and the gateway use, need
	// the password. Locale C keeps the cluster independent of the
	// machine's locales.
	cmd := p.command(filepath.Join(p.binDir, "initdb"),
		"-D", p.dataDir(), "-U", p.User, "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: initdb: %v\n%s", err, tail(out, 4000))
	}

	cert, key := selfSignedCert(t)
	p.CertFile = filepath.Join(p.dataDir(), "server.crt")
	p.writeFile(t, p.CertFile, cert, 0o644)
	// postgres refuses a key that others can read.
	p.writeFile(t, filepath.Join(p.dataDir(), "server.key"), key, 0o600)

	f, err := os.OpenFile(filepath.Join(p.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer f.Close()
	// Our settings live in their own file so a port retry can rewrite it.
	if _, err := f.WriteString("\ninclude 'testenv.conf'\n"); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// writeConf writes the settings that differ from initdb's defaults.
func (p *Postgres) writeConf(t testing.TB) {
	t.Helper()
	conf := fmt.Sprintf(`# written by testenv
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 200
# Durability is pointless for throwaway data and costs time.
fsync = off
synchronous_commit = off
full_page_writes = off
# TLS on, so upstream sslmode prefer/require is exercised for real.
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
`, p.Port, p.Dir)
	p.writeFile(t, filepath.Join(p.dataDir(), "testenv.conf"), conf, 0o644)
}

func (p *Postgres) exec(t testing.TB, database, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn := p.connect(t, ctx, database)
	defer conn.Close(ctx)
	// Without arguments pgx uses the simple protocol, which runs a script
	// of several statements.
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("testenv: postgres exec in %s: %v\nsql: %s", database, err, tail([]byte(sql), 500))
	}
}

func (p *Postgres) connect(t testing.TB, ctx context.Context, database string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(p.DSN())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cfg.Database = database
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("testenv: connect to postgres %s/%s: %v", p.Addr(), database, err)
	}
	return conn
}

func (p *Postgres) writeFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	p.chown(t, path)
}

func (p *Postgres) chown(t testing.TB, path string) {
	t.Helper()
	if p.owner == nil {
		return
	}
	if err := os.Chown(path, p.owner.uid, p.owner.gid); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func lookupDBOwner(t testing.TB) *dbOwner {
	t.Helper()
	RequireBinary(t, "runuser", "util-linux")
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("testenv: running as root needs the postgres user to own the cluster: %v "+
			"(it comes with: apt-get install -y postgresql)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &dbOwner{uid, gid}
}

// othersCanEnter reports whether every directory from / down to dir is
// searchable by other users.
func othersCanEnter(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

var pgInstall sync.Mutex

// postgresBinDir finds the directory with initdb and pg_ctl. Debian keeps
// them in /usr/lib/postgresql/MAJOR/bin, off PATH, so both places count.
// When none is found and we are root, the postgresql package (or
// postgresql-VERSION) is installed.
func postgresBinDir(t testing.TB, version string) string {
	t.Helper()
	pkg := "postgresql"
	if version != "" {
		pkg = "postgresql-" + version
	}
	pgInstall.Lock()
	defer pgInstall.Unlock()
	if dir := findPostgresBinDir(version); dir != "" {
		return dir
	}
	hint := fmt.Sprintf("missing initdb: install with: apt-get install -y %s", pkg)
	if os.Geteuid() != 0 {
		t.Fatalf("testenv: %s", hint)
	}
	if err := aptInstall(pkg); err != nil {
		t.Fatalf("testenv: %s (installing it failed: %v)", hint, err)
	}
	dir := findPostgresBinDir(version)
	if dir == "" {
		t.Fatalf("testenv: %s (installed, but initdb and pg_ctl are still not found)", hint)
	}
	return dir
}

func findPostgresBinDir(version string) string {
	hasBoth := func(dir string) bool {
		return fileExists(filepath.Join(dir, "initdb")) && fileExists(filepath.Join(dir, "pg_ctl"))
	}
	if version != "" {
		if dir := filepath.Join("/usr/lib/postgresql", version, "bin"); hasBoth(dir) {
			return dir
		}
		return ""
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		// Resolve symlinks such as /usr/local/bin/initdb so pg_ctl comes
		// from the same installation.
		if real, err := filepath.EvalSymlinks(p); err == nil && hasBoth(filepath.Dir(real)) {
			return filepath.Dir(real)
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return majorOf(dirs[i]) > majorOf(dirs[j]) })
	for _, dir := range dirs {
		if hasBoth(dir) {
			return dir
		}
	}
	return ""
}

// majorOf reads MAJOR from /usr/lib/postgresql/MAJOR/bin, so 16 sorts
// after 9.6.
func majorOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

// selfSignedCert returns a PEM certificate and key for 127.0.0.1 and
// localhost. Generated here rather than with openssl, which a fresh
// machine may lack.
func selfSignedCert(t testing.TB) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "testenv postgres"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b)
}
