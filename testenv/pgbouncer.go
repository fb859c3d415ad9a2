package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PgBouncerOptions configures StartPgBouncer.
type PgBouncerOptions struct {
	// PoolMode is session (default), transaction or statement.
	PoolMode string
	// MaxClientConn caps client connections (default 1000).
	MaxClientConn int
	// PoolSize is the server connections per database and user (default 20).
	PoolSize int
}

// PgBouncer is a running PgBouncer in front of a testenv Postgres. Clients
// log in as the upstream's user with its password, over TLS or not.
type PgBouncer struct {
	Host string
	Port int
	dir  string
}

// Addr is PgBouncer's TCP address.
func (b *PgBouncer) Addr() string { return net.JoinHostPort(b.Host, strconv.Itoa(b.Port)) }

// PID is the pgbouncer process's id, from its pidfile (the benchmarks
// read its CPU time).
func (b *PgBouncer) PID(t testing.TB) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(b.dir, "pgbouncer.pid"))
	if err != nil {
		t.Fatalf("testenv: pgbouncer pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatalf("testenv: pgbouncer pidfile %q: %v", raw, err)
	}
	return pid
}

// StartPgBouncer starts PgBouncer (Debian's pgbouncer package, installed
// when missing) in front of p, with client TLS on p's certificate. It runs
// as p's owner, since PgBouncer refuses to run as root.
func StartPgBouncer(t testing.TB, p *Postgres, o PgBouncerOptions) *PgBouncer {
	t.Helper()
	bin := RequireBinary(t, "pgbouncer", "pgbouncer")
	if o.PoolMode == "" {
		o.PoolMode = "session"
	}
	if o.MaxClientConn == 0 {
		o.MaxClientConn = 1000
	}
	if o.PoolSize == 0 {
		o.PoolSize = 20
	}
	b := &PgBouncer{Host: "127.0.0.1", Port: FreePort(t)}
	dir := filepath.Join(p.Dir, fmt.Sprintf("pgbouncer-%d", b.Port))
	b.dir = dir
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	p.chown(t, dir)
	data := p.dataDir()
	p.writeFile(t, filepath.Join(dir, "userlist.txt"), fmt.Sprintf("%q %q\n", p.User, p.Password), 0o600)
	p.writeFile(t, filepath.Join(dir, "pgbouncer.ini"), fmt.Sprintf(`[databases]
%s = host=127.0.0.1 port=%d dbname=%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %s/userlist.txt
pool_mode = %s
max_client_conn = %d
default_pool_size = %d
client_tls_sslmode = allow
client_tls_cert_file = %s/server.crt
client_tls_key_file = %s/server.key
server_tls_sslmode = prefer
logfile = %s/pgbouncer.log
pidfile = %s/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
`, p.Database, p.Port, p.Database, b.Port, dir, o.PoolMode, o.MaxClientConn, o.PoolSize, data, data, dir, dir), 0o600)
	// PgBouncer needs a descriptor per client: raise the soft limit to
	// the hard one, which is what max_client_conn above 1000 needs.
	script := `ulimit -S -n "$(ulimit -H -n)"; exec "$0" "$@"`
	args := []string{"-c", script, bin, filepath.Join(dir, "pgbouncer.ini")}
	var cmd *exec.Cmd
	if p.owner != nil {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", "/bin/sh"}, args...)...)
	} else {
		cmd = exec.Command("/bin/sh", args...)
	}
	cmd.Dir = dir
	inOwnGroup(cmd) // killing runuser alone would leave pgbouncer running
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start pgbouncer: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		killGroup(cmd)
		<-exited
	})
	listening := func() error {
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := waitReady("pgbouncer", exited, 15*time.Second, listening); err != nil {
		t.Fatalf("testenv: %v:\n%s", err, tailFile(filepath.Join(dir, "pgbouncer.log"), 2000))
	}
	return b
}
