package testenv

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestPgBouncer(t *testing.T) {
	p := StartPostgres(t, PostgresOptions{})
	var addr string
	t.Run("serves", func(t *testing.T) {
		b := StartPgBouncer(t, p, PgBouncerOptions{PoolMode: "transaction"})
		addr = b.Addr()
		checkPgBouncer(t, p, b)
	})
	// Its cleanup ran with the subtest: PgBouncer, not only the runuser
	// that started it, must be gone.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("pgbouncer still listens on %s after its cleanup", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func checkPgBouncer(t *testing.T, p *Postgres, b *PgBouncer) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=require default_query_exec_mode=simple_protocol", b.Host, b.Port, p.User, p.Password, p.Database))
	if err != nil {
		t.Fatalf("connect through pgbouncer: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "select 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("query through pgbouncer: %d, %v", n, err)
	}
	if _, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s password=wrong dbname=%s sslmode=disable", b.Host, b.Port, p.User, p.Database)); err == nil {
		t.Fatal("pgbouncer took a wrong password")
	}
}
