package testenv

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestPostgresSampleSchema(t *testing.T) {
	t.Parallel()
	pg := StartPostgres(t, PostgresOptions{InitSQL: SampleSchema})

	if n := pg.QueryInt(t, "select count(*) from orders"); n <= 0 {
		t.Fatalf("orders: got %d rows, want some", n)
	}
	// The numbers sample_schema.sql promises to tests and the demo.
	for _, c := range []struct {
		sql  string
		want int64
	}{
		{"select count(*) from customers", 20},
		{"select count(*) from orders", 200},
		{"select count(distinct status) from orders", 4},
		{"select count(*) from orders where created_at >= current_date - 1 and created_at < current_date", 66},
		{"select count(*) from orders where status = 'failed' and created_at >= current_date - 1 and created_at < current_date", 8},
		{"select count(*) from orders where created_at >= current_date", 0},
		{"select count(*) from orders o left join customers c on c.id = o.customer_id where c.id is null", 0},
	} {
		if got := pg.QueryInt(t, c.sql); got != c.want {
			t.Errorf("%s: got %d, want %d", c.sql, got, c.want)
		}
	}
	// Loading it again must work (demo re-runs) and give the same data.
	pg.Exec(t, SampleSchema)
	if got := pg.QueryInt(t, "select count(*) from orders"); got != 200 {
		t.Errorf("after reload: %d orders, want 200", got)
	}
}

func TestPostgresPasswordAndTLS(t *testing.T) {
	t.Parallel()
	pg := StartPostgres(t, PostgresOptions{Database: "shop", User: "owner", Password: "s3cret word/?"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The right password works, also through the URL escaping of DSN.
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatalf("connect with the right password: %v", err)
	}
	var user, db string
	if err := conn.QueryRow(ctx, "select current_user, current_database()").Scan(&user, &db); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if user != "owner" || db != "shop" {
		t.Errorf("connected as %s to %s, want owner to shop", user, db)
	}

	// A wrong password, or none, is refused with invalid_password.
	for _, pw := range []string{"wrong", ""} {
		dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=owner dbname=shop sslmode=disable password='%s'", pg.Port, pw)
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			conn.Close(ctx)
			t.Fatalf("password %q: connected; want authentication failure", pw)
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Errorf("password %q: got %v, want SQLSTATE 28P01 (invalid_password)", pw, err)
		}
	}

	// TLS is on and the certificate verifies as its own CA.
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=owner password='s3cret word/?' dbname=shop sslmode=verify-full sslrootcert=%s",
		pg.Port, pg.CertFile)
	conn, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect with sslmode=verify-full: %v", err)
	}
	defer conn.Close(ctx)
	var ssl bool
	if err := conn.QueryRow(ctx, "select ssl from pg_stat_ssl where pid = pg_backend_pid()").Scan(&ssl); err != nil {
		t.Fatal(err)
	}
	if !ssl {
		t.Error("verify-full connection is not encrypted")
	}
}

func TestPostgresStopStart(t *testing.T) {
	t.Parallel()
	pg := StartPostgres(t, PostgresOptions{InitSQL: "create table t (v int); insert into t values (42);"})
	port := pg.Port

	pg.Stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, pg.DSN()); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a stopped server")
	}

	pg.Start(t)
	if pg.Port != port {
		t.Errorf("port changed from %d to %d across restart", port, pg.Port)
	}
	if got := pg.QueryInt(t, "select v from t"); got != 42 {
		t.Errorf("after restart: got %d, want 42", got)
	}
}

func TestNATSJetStreamStopStart(t *testing.T) {
	t.Parallel()
	ns := StartNATS(t, NATSOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	publish := func(want uint64) {
		t.Helper()
		nc, err := nats.Connect(ns.URL)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: "EVENTS", Subjects: []string{"events.>"}, Storage: jetstream.FileStorage,
		}); err != nil {
			t.Fatalf("create stream: %v", err)
		}
		ack, err := js.Publish(ctx, "events.test", []byte("hello"))
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		if ack.Sequence != want {
			t.Errorf("publish acknowledged as sequence %d, want %d", ack.Sequence, want)
		}
	}
	publish(1)

	ns.Stop(t)
	if nc, err := nats.Connect(ns.URL, nats.Timeout(time.Second)); err == nil {
		nc.Close()
		t.Fatal("connected to a stopped server")
	}

	ns.Start(t)
	// Sequence 2 proves the stream and its message survived the restart.
	publish(2)
}

func TestNATSWithoutJetStream(t *testing.T) {
	t.Parallel()
	ns := StartNATS(t, NATSOptions{DisableJetStream: true})
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err == nil {
		t.Fatal("JetStream answers on a server started without it")
	}
}

func TestNATSFixedPort(t *testing.T) {
	t.Parallel()
	port := FreePort(t)
	ns := StartNATS(t, NATSOptions{Port: port})
	if ns.Port != port || ns.URL != fmt.Sprintf("nats://127.0.0.1:%d", port) {
		t.Errorf("got port %d, URL %s; want port %d", ns.Port, ns.URL, port)
	}
}

// fatalRecorder stands in for a testing.TB to observe a Fatalf.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runFatal runs fn in its own goroutine, as Fatalf's Goexit requires, and
// returns the message it failed with ("" if none).
func runFatal(fn func(tb testing.TB)) string {
	f := &fatalRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msg
}

func TestRequireBinary(t *testing.T) {
	if p := RequireBinary(t, "sh", "dash"); !strings.HasSuffix(p, "/sh") {
		t.Errorf("RequireBinary(sh) = %q", p)
	}

	const missing = "airlock-no-such-program"
	noInstall := func(string) error { t.Error("installer called for a non-root user"); return nil }
	msg := runFatal(func(tb testing.TB) { requireBinary(tb, missing, "airlock-pkg", false, noInstall) })
	if want := "missing " + missing + ": install with: apt-get install -y airlock-pkg"; !strings.Contains(msg, want) {
		t.Errorf("non-root failure message %q does not contain %q", msg, want)
	}

	var installed string
	failing := func(pkg string) error { installed = pkg; return errors.New("no such package") }
	msg = runFatal(func(tb testing.TB) { requireBinary(tb, missing, "airlock-pkg", true, failing) })
	if installed != "airlock-pkg" {
		t.Errorf("as root, installer got %q, want airlock-pkg", installed)
	}
	if !strings.Contains(msg, "no such package") || !strings.Contains(msg, "apt-get install -y airlock-pkg") {
		t.Errorf("root install failure message %q lacks the cause or the command", msg)
	}
}
