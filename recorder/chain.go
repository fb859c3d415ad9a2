package recorder

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Canonical is the encoding an event's Hash covers: the event as
// encoding/json writes it, with Hash and Sig empty and therefore absent.
// Precisely (docs/events.md, "Canonical encoding"):
//
//   - one JSON object, no insignificant whitespace;
//   - members in the order the format lists them (Go struct field order,
//     Meta's fields inlined after sig), optional members omitted when
//     empty, every other member present;
//   - strings escaped as encoding/json does: UTF-8, with <, >, &, U+2028
//     and U+2029 as \u003c, \u003e, \u0026, \u2028, \u2029, and invalid
//     UTF-8 replaced by U+FFFD;
//   - times in RFC 3339 with nanoseconds, trailing zeros trimmed, in UTC
//     ("Z").
//
// A message as stored in the stream is the same encoding with hash and
// sig filled in, so decoding it and encoding it again gives its bytes back;
// the verifier relies on that and reports an event that does not (a field
// this format does not define, a value spelled differently) as altered.
func Canonical(ev *Event) ([]byte, error) {
	c := *ev
	c.Hash, c.Sig = "", ""
	return json.Marshal(&c)
}

// hashEvent returns the SHA-256 of ev's canonical encoding.
func hashEvent(ev *Event) ([sha256.Size]byte, error) {
	b, err := Canonical(ev)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// EventHash is the hex SHA-256 of ev's canonical encoding: what ev.Hash
// must be, and what the next event's Prev must be.
func EventHash(ev *Event) (string, error) {
	sum, err := hashEvent(ev)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(sum[:]), nil
}

// MustSign reports whether an event must carry a signature in format v3:
// the events that open and close a session (session.start, auth.failed,
// session.end) and checkpoints. Every other event may be signed, and is
// when its session's oldest unsigned event has waited half of
// SignInterval (a quiet session gets a checkpoint at the full interval); a
// signature covers the event's hash, which covers Prev, which covers every
// earlier event, so unsigned events are covered by the next signature.
// What stays unsigned is a tail after the last signature, which exists
// only when the session has no end (the gateway died): the verifier
// reports it. An event type this version does not know must be signed.
func MustSign(ev *Event) bool {
	switch ev.Type {
	case TypeStatement, TypeStatementResult, TypeData:
		return false
	}
	return true
}

// signedV2 is the rule of format v2, which signed every event a session
// waited on: all but results and the earlier statements of a multi-statement
// message.
func signedV2(ev *Event) bool {
	switch ev.Type {
	case TypeStatementResult:
		return false
	case TypeStatement:
		return ev.Statement == nil || ev.Statement.Index >= ev.Statement.Count-1
	}
	return true
}
