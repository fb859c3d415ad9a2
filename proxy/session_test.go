package proxy

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
)

// TestNothingAfterEnd: a statement that reaches a session after its end
// (a cancel request racing it, or an oversized message) is refused and
// neither recorded nor counted, since its event would follow the
// session.end, which verification reports as tampering. The session has
// no event log here: reaching it panics, which fails the test.
func TestNothingAfterEnd(t *testing.T) {
	srv := &Server{Config: &config.Config{}}
	s := &Session{srv: srv, ended: true, log: slog.New(slog.DiscardHandler)}
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("a statement after the end reached the event log: %v", p)
		}
	}()
	v := authz.SingleVerdict(authz.Decision{Text: "select 1", Allow: true})
	first, denied, err := s.appendStatements(v, nil, srv.now(), true, func(authz.Decision) (string, string, string) {
		return "allow", "", ""
	})
	if !errors.Is(err, errEnded) || first != 0 || denied != nil {
		t.Errorf("appendStatements after the end: first id %d, denied %v, err %v; want errEnded", first, denied, err)
	}
	d := NewDigest()
	if _, err := d.Write(bytes.Repeat([]byte("x"), 1000)); err != nil {
		t.Fatal(err)
	}
	if r := s.RefuseTooLarge("Query message", d); r == nil || r.Kind != "too-large" {
		t.Errorf("RefuseTooLarge after the end: %+v, want a too-large refusal", r)
	}
	if s.nextStmt != 0 || s.statements != 0 || s.denied != 0 {
		t.Errorf("counted after the end: ids %d, statements %d, denied %d", s.nextStmt, s.statements, s.denied)
	}
}
