package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/recorder"
)

// PrefixBytes is how much of a statement over the cap is recorded.
const PrefixBytes = 1 << 10

// MaxStatementBytes is recorder.max_statement_bytes: the largest client
// message carrying a statement that the session reads whole, records and
// forwards. A listener reads a larger one through a Digest, without
// holding it, and refuses it with RefuseTooLarge.
func (s *Session) MaxStatementBytes() int {
	if n := s.srv.Config.Recorder.MaxStatementBytes; n > 0 {
		return n
	}
	return 64 << 20
}

// Digest takes the bytes of a message the gateway does not keep: it hashes
// them and keeps the first PrefixBytes.
type Digest struct {
	h      hash.Hash
	n      int64
	prefix []byte
}

// NewDigest starts an empty digest.
func NewDigest() *Digest { return &Digest{h: sha256.New()} }

// Write implements io.Writer; it never fails.
func (d *Digest) Write(p []byte) (int, error) {
	if keep := PrefixBytes - len(d.prefix); keep > 0 {
		d.prefix = append(d.prefix, p[:min(keep, len(p))]...)
	}
	d.n += int64(len(p))
	return d.h.Write(p)
}

// Len is how many bytes were written.
func (d *Digest) Len() int64 { return d.n }

// Prefix is the first bytes written, up to PrefixBytes.
func (d *Digest) Prefix() []byte { return d.prefix }

// RefuseTooLarge records the refusal of a client message larger than
// recorder.max_statement_bytes, which the listener read through d (its
// statement text, or for messages that carry more than a text, its whole
// body; what names it, e.g. "Query message"), and returns what to tell the
// client. The event holds the text's first bytes and its size and SHA-256,
// not the text: the cap is what bounds what one statement costs the
// gateway and the recorder.
func (s *Session) RefuseTooLarge(what string, d *Digest) *Refusal {
	limit := s.MaxStatementBytes()
	reason := fmt.Sprintf("the %s is %d bytes, more than recorder.max_statement_bytes (%d) allows; airlock forwards only what it records, so it was refused and recorded by its size and SHA-256; nothing was executed",
		what, d.Len(), limit)
	sum := d.h.Sum(nil)
	now := s.srv.now()
	s.mu.Lock()
	if s.ended {
		// Nothing follows the session's end on record (see errEnded).
		s.mu.Unlock()
		return &Refusal{Kind: "too-large", Msg: "airlock: " + reason}
	}
	st := &recorder.Statement{
		Count:    1,
		Text:     recorder.PrefixOf(string(d.prefix), PrefixBytes),
		TextRef:  &recorder.Ref{Size: d.Len(), SHA256: hex.EncodeToString(sum), Omitted: true},
		Decision: "deny", Rule: "too-large", Reason: reason,
		Class: authz.Classification{Kind: "TOO LARGE", Required: authz.AccessAdmin},
	}
	s.appendStatementLocked(st, now, true)
	s.mu.Unlock()
	s.srv.Observer.Statements(s.conn.Proto, 0, 1)
	if err := s.events.Commit(s.ctx); err != nil {
		s.log.Warn("refusal not yet recorded; it stays queued", "err", err)
		s.endIfBroken()
	} else {
		s.announceDenied(now, []*recorder.Statement{st})
	}
	s.log.Info("statement over the size cap refused", "bytes", d.Len(), "max_statement_bytes", limit)
	return &Refusal{Kind: "too-large", Msg: "airlock: " + reason}
}

// endIfBroken ends the session when its event log can never be complete
// again (recorder.Log.Broken): every later statement would be refused, so
// the client is told why and may reconnect into a new session.
func (s *Session) endIfBroken() {
	if err := s.events.Broken(); err != nil {
		s.log.Error("session's record cannot go on; ending the session", "err", err)
		s.cancel(fmt.Errorf("recording of this session failed for good (%v); reconnect to start a new one", err))
	}
}
