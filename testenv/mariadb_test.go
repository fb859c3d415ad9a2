package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

func TestMariaDBSampleSchema(t *testing.T) {
	t.Parallel()
	m := StartMariaDB(t, MariaDBOptions{InitSQL: SampleSchemaMySQL})
	// The numbers sample_schema_mysql.sql promises, the same as the
	// Postgres schema's.
	for _, c := range []struct {
		sql  string
		want int64
	}{
		{"select count(*) from customers", 20},
		{"select count(*) from orders", 200},
		{"select count(distinct status) from orders", 4},
		{"select count(*) from orders where status = 'failed'", 25},
		{"select count(*) from orders where created_at >= current_date - interval 1 day and created_at < current_date", 66},
		{"select count(*) from orders where status = 'failed' and created_at >= current_date - interval 1 day and created_at < current_date", 8},
		{"select count(*) from orders where created_at >= current_date", 0},
		{"select count(*) from orders o left join customers c on c.id = o.customer_id where c.id is null", 0},
	} {
		if got := m.QueryInt(t, c.sql); got != c.want {
			t.Errorf("%s: got %d, want %d", c.sql, got, c.want)
		}
	}
	if got := m.QueryString(t, "select name from customers where id = 1"); got != "Ada Liskov" {
		t.Errorf("customer 1 is %q, want Ada Liskov", got)
	}
	m.Exec(t, SampleSchemaMySQL)
	if got := m.QueryInt(t, "select count(*) from orders"); got != 200 {
		t.Errorf("after reload: %d orders, want 200", got)
	}
	if v := m.QueryString(t, "select version()"); !strings.Contains(v, "MariaDB") {
		t.Errorf("version %q is not MariaDB's", v)
	}
}

func TestMariaDBPasswordAndTLS(t *testing.T) {
	t.Parallel()
	m := StartMariaDB(t, MariaDBOptions{Database: "shop", User: "owner", Password: `s3cret 'word'/?\`, RequireTLS: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pool := x509.NewCertPool()
	pem, err := os.ReadFile(m.CertFile)
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("reading %s: %v", m.CertFile, err)
	}
	connect := func(user, password string, tlsCfg *tls.Config) (*sql.DB, error) {
		c := m.config("shop")
		c.User, c.Passwd = user, password
		c.TLS = tlsCfg
		conn, err := mysql.NewConnector(c)
		if err != nil {
			t.Fatal(err)
		}
		db := sql.OpenDB(conn)
		return db, db.PingContext(ctx)
	}
	verified := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}

	// The right password over verified TLS works, also with quotes and
	// a backslash in it.
	db, err := connect("owner", m.Password, verified)
	if err != nil {
		t.Fatalf("connect with the right password over verified TLS: %v", err)
	}
	var user, dbname, cipher string
	if err := db.QueryRowContext(ctx, "select current_user(), database()").Scan(&user, &dbname); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, "show session status like 'Ssl_cipher'").Scan(new(string), &cipher); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if user != "owner@%" || dbname != "shop" || cipher == "" {
		t.Errorf("connected as %s to %s with cipher %q, want owner@%% to shop over TLS", user, dbname, cipher)
	}

	// A wrong password, or none, is refused with 1045; no account is left
	// without a password, and only the configured one is reachable over
	// TCP.
	for _, c := range []struct{ user, pw string }{{"owner", "wrong"}, {"owner", ""}, {"root", ""}, {"root", m.Password}, {"", ""}} {
		db, err := connect(c.user, c.pw, verified)
		db.Close()
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1045 {
			t.Errorf("user %q password %q: got %v, want error 1045 (access denied)", c.user, c.pw, err)
		}
	}

	// RequireTLS refuses plaintext (MariaDB says access denied).
	db, err = connect("owner", m.Password, nil)
	db.Close()
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1045 {
		t.Errorf("plaintext with RequireTLS: got %v, want error 1045", err)
	}
}

func TestMariaDBStopStart(t *testing.T) {
	t.Parallel()
	m := StartMariaDB(t, MariaDBOptions{InitSQL: "create table t (v int); insert into t values (42);"})
	port := m.Port

	m.Stop(t)
	c := m.config(m.Database)
	conn, _ := mysql.NewConnector(c)
	db := sql.OpenDB(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err == nil {
		t.Fatal("connected to a stopped server")
	}
	db.Close()

	m.Start(t)
	if m.Port != port {
		t.Errorf("port changed from %d to %d across restart", port, m.Port)
	}
	if got := m.QueryInt(t, "select v from t"); got != 42 {
		t.Errorf("after restart: got %d, want 42", got)
	}
}
