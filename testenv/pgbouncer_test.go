package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestPgBouncer(t *testing.T) {
	p := StartPostgres(t, PostgresOptions{})
	b := StartPgBouncer(t, p, PgBouncerOptions{PoolMode: "transaction"})
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
