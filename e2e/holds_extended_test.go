package e2e

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestHoldPostgresTransactionPipeline: a held Execute inside a
// transaction waits with the transaction open and, approved, commits with
// it; denied, it fails the transaction as a server error would. In a
// pipeline the held Execute waits while what came before it is answered,
// and what follows it runs after the decision.
func TestHoldPostgresTransactionPipeline(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, tok := grantFor(t, g, "write", "--hold", "DELETE", "--hold-timeout", "1m")
	conn := connectPgx(t, g, "agent-1", tok)
	ctx := context.Background()
	exec := func(sql string, args ...any) chan error {
		c := make(chan error, 1)
		go func() {
			_, err := conn.Exec(ctx, sql, args...)
			c <- err
		}()
		return c
	}
	waiting := func(c chan error) {
		t.Helper()
		select {
		case err := <-c:
			t.Fatalf("the held statement returned before anyone decided: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
	}

	// Approved inside a transaction: it runs in it, and the commit keeps
	// both the insert before it and the delete.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into customers (name, email) values ($1, $2)", "held-tx", "held-tx@example.com"); err != nil {
		t.Fatal(err)
	}
	done := exec("delete from orders where id = $1", 11)
	h := pendingHold(t, g)
	if !slices.Equal(h.Statements[0].Params, []string{"11"}) {
		t.Errorf("hold parameters: %q", h.Statements[0].Params)
	}
	waiting(done)
	g.MustCLI("alice", "holds", "approve", h.ID)
	if err := <-done; err != nil {
		t.Fatalf("approved delete in a transaction: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit after the approved delete: %v", err)
	}
	var orders, customers int
	if err := conn.QueryRow(ctx, "select (select count(*) from orders where id = 11), (select count(*) from customers where email = 'held-tx@example.com')").Scan(&orders, &customers); err != nil || orders != 0 || customers != 1 {
		t.Fatalf("after the commit: order 11 ×%d, the inserted customer ×%d (%v)", orders, customers, err)
	}

	// Denied inside a transaction: the transaction fails as on a server
	// error; the rollback undoes the insert, and the session goes on.
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into customers (name, email) values ($1, $2)", "held-tx", "held-tx2@example.com"); err != nil {
		t.Fatal(err)
	}
	done = exec("delete from orders where id = $1", 12)
	h = pendingHold(t, g)
	g.MustCLI("alice", "holds", "deny", h.ID, "--reason", "not in this change")
	var pgErr *pgconn.PgError
	if err := <-done; !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("denied delete in a transaction: %v", err)
	}
	if _, err := tx.Exec(ctx, "select 1"); !errors.As(err, &pgErr) || pgErr.Code != "25P02" {
		t.Errorf("the transaction after the denial: %v, want 25P02 (in failed transaction)", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "select (select count(*) from orders where id = 12), (select count(*) from customers where email = 'held-tx2@example.com')").Scan(&orders, &customers); err != nil || orders != 1 || customers != 0 {
		t.Fatalf("after the rollback: order 12 ×%d, the inserted customer ×%d (%v)", orders, customers, err)
	}

	// A pipeline: insert, held delete, select, one Sync each. The insert
	// is answered while the delete waits; after the approval the delete
	// and the select run.
	p := conn.PgConn().StartPipeline(ctx)
	p.SendQueryParams("insert into customers (name, email) values ($1, $2)", [][]byte{[]byte("pipe"), []byte("held-pipe@example.com")}, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	p.SendQueryParams("delete from orders where id = $1", [][]byte{[]byte("13")}, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	p.SendQueryParams("select count(*) from orders where id = 13", nil, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	results := make(chan string, 8)
	go func() {
		defer close(results)
		for {
			r, err := p.GetResults()
			if err != nil {
				results <- "error: " + err.Error()
				return
			}
			switch r := r.(type) {
			case nil:
				return
			case *pgconn.ResultReader:
				res := r.Read()
				if res.Err != nil {
					results <- "error: " + res.Err.Error()
					continue
				}
				s := res.CommandTag.String()
				if len(res.Rows) == 1 {
					s += " " + string(res.Rows[0][0])
				}
				results <- s
			case *pgconn.PipelineSync:
				results <- "sync"
			}
		}
	}()
	h = pendingHold(t, g)
	if h.Statements[0].Text != "delete from orders where id = $1" || !slices.Equal(h.Statements[0].Params, []string{"13"}) {
		t.Fatalf("pipeline hold: %+v", h)
	}
	var got []string
	for len(got) < 2 {
		select {
		case r := <-results:
			got = append(got, r)
		case <-time.After(10 * time.Second):
			t.Fatalf("the insert before the held delete was not answered while it waited: %v", got)
		}
	}
	if !slices.Equal(got, []string{"INSERT 0 1", "sync"}) {
		t.Fatalf("answered before the decision: %v", got)
	}
	select {
	case r := <-results:
		t.Fatalf("the pipeline went past the held delete before the decision: %v, %s", got, r)
	case <-time.After(300 * time.Millisecond):
	}
	g.MustCLI("alice", "holds", "approve", h.ID)
	timeout := time.After(10 * time.Second)
	for len(got) < 6 {
		select {
		case r := <-results:
			got = append(got, r)
		case <-timeout:
			t.Fatalf("pipeline after the approval: %v", got)
		}
	}
	if want := []string{"INSERT 0 1", "sync", "DELETE 1", "sync", "SELECT 1 0", "sync"}; !slices.Equal(got, want) {
		t.Errorf("pipeline: %v, want %v", got, want)
	}
	// The reader ends once the pipeline has nothing more (its channel
	// closes): only then may this goroutine use the connection again.
	select {
	case r, more := <-results:
		if more {
			t.Errorf("the pipeline answered more than it was sent: %s", r)
			for range results {
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pipeline's reader did not end")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "select count(*) from customers where email = 'held-pipe@example.com'", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 1 {
		t.Errorf("the pipeline's insert: %d rows (%v)", n, err)
	}
}
