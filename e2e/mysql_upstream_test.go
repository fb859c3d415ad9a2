package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/recorder"
)

// TestMySQLUpstreamGone: when the server closes a session's upstream
// connection while the client is idle (wait_timeout, a KILL from another
// connection), the gateway closes the client's connection at once, so the
// client sees EOF without sending anything and a driver's stale-connection
// check retries on a new connection; session.end says why.
func TestMySQLUpstreamGone(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-76: idle sessions", "read")

	// eofWithin reads the idle client connection and fails unless it ends
	// within d.
	eofWithin := func(what string, nc net.Conn, d time.Duration) {
		t.Helper()
		start := time.Now()
		_ = nc.SetReadDeadline(time.Now().Add(d + 5*time.Second))
		b := make([]byte, 64)
		n, err := nc.Read(b)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Errorf("%s: the client connection is still open after %v", what, time.Since(start).Round(time.Millisecond))
		case err == nil:
			t.Errorf("%s: the client got %q instead of EOF", what, b[:n])
		case time.Since(start) > d:
			t.Errorf("%s: EOF after %v, want within %v", what, time.Since(start).Round(time.Millisecond), d)
		default:
			t.Logf("%s: EOF after %v (%v)", what, time.Since(start).Round(time.Millisecond), err)
		}
	}

	// wait_timeout: MariaDB closes the idle upstream without a word.
	c := g.mysqlRaw("agent-1", iss.Token)
	if _, err := c.Execute("SET SESSION wait_timeout = 2"); err != nil {
		t.Fatal(err)
	}
	eofWithin("wait_timeout", c.Conn.Conn, 4*time.Second)

	// KILL of the upstream thread from a direct connection.
	c = g.mysqlRaw("agent-1", iss.Token)
	r, err := c.Execute("SELECT CONNECTION_ID()")
	if err != nil {
		t.Fatal(err)
	}
	thread, _ := r.GetInt(0, 0)
	g.my.Exec(t, fmt.Sprintf("KILL %d", thread))
	eofWithin("KILL", c.Conn.Conn, 2*time.Second)

	// go-sql-driver checks an idle connection before reusing it: it must
	// find this one closed and open another, so the query succeeds.
	db := g.mysqlDB("agent-1", iss.Token)
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	var id int64
	if err := db.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	g.my.Exec(t, fmt.Sprintf("KILL %d", id))
	time.Sleep(500 * time.Millisecond)
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM orders").Scan(&n); err != nil || n != 200 {
		t.Fatalf("query after the upstream was killed: %d, %v", n, err)
	}

	// The record says why each session ended.
	ended := 0
	for _, evs := range g.sessionEvents(iss.Grant.ID) {
		last := evs[len(evs)-1]
		if last.Type == recorder.TypeSessionEnd && strings.Contains(last.End.Reason, "upstream closed the connection while the session was idle") {
			ended++
		}
	}
	if ended != 3 {
		t.Errorf("%d sessions recorded as ended by the upstream while idle, want 3", ended)
	}
}
