package recorder

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Verification outcomes, Report.Status.
const (
	// VerifyOK: the session is complete and every event checks: seqs 1..n
	// without gaps, each Prev the previous Hash, each Hash its content,
	// every signature valid under one trusted key, ending with a signed
	// session.end (or a single signed auth.failed).
	VerifyOK = "ok"
	// VerifyUnterminated: everything present checks, but the session has
	// no end: the gateway stopped mid-session (a crash) or the session is
	// still open. Events after the last signature are covered by the hash
	// chain only; Report.Unauthenticated counts them.
	VerifyUnterminated = "unterminated"
	// VerifyFailed: the record is not what the gateway wrote (altered,
	// removed, reordered, inserted, forged, replayed), or cannot be checked
	// (no events, unknown format, untrusted key). FirstBad and Problem say
	// where and why.
	VerifyFailed = "failed"
)

// Report is the outcome of verifying one session.
type Report struct {
	Session string `json:"session"`
	Status  string `json:"status"`
	Events  int    `json:"events"`
	// LastSeq is the seq of the last event read.
	LastSeq uint64 `json:"last_seq"`
	// Key is the fingerprint of the key the session is signed with.
	Key string `json:"key,omitempty"`
	// FirstBad is the first seq that fails (for a missing event, the
	// missing seq); 0 when the failure concerns no single event.
	FirstBad uint64 `json:"first_bad_seq,omitempty"`
	// Problem says why the session failed or is unterminated.
	Problem string `json:"problem,omitempty"`
	// Unauthenticated is how many events of an unterminated session come
	// after its last signature.
	Unauthenticated int `json:"unauthenticated,omitempty"`
}

// OK reports whether the session verified completely.
func (r Report) OK() bool { return r.Status == VerifyOK }

// Verify checks one session's events, in the order given (a reader's
// order: by seq), against the trusted keys. session names the session the
// events must belong to; empty takes it from the first event. It is pure:
// no clock, no I/O. Events that reference values stored in chunks fail
// here: check them with VerifyStored.
func Verify(session string, evs []Event, keys Keyring) Report {
	return checkRefs(verify(session, evs, nil, keys), evs, nil)
}

// VerifyRaw is Verify over events as stored (message bodies, JSON). Beyond
// Verify it checks that each body is exactly the encoding of the event it
// decodes to, so a member this format does not define, which Verify would
// never see, counts as an alteration too.
func VerifyRaw(session string, raws []json.RawMessage, keys Keyring) Report {
	return VerifyStored(session, raws, nil, keys)
}

// DecodeRaw decodes stored event bodies. bad maps the index of each body
// that is not in canonical form to why; an undecodable body becomes an
// Event with only its index's seq guess, flagged in bad.
func DecodeRaw(raws []json.RawMessage) (evs []Event, bad map[int]string) {
	evs = make([]Event, len(raws))
	flag := func(i int, why string) {
		if bad == nil {
			bad = map[int]string{}
		}
		bad[i] = why
	}
	var buf bytes.Buffer
	for i, raw := range raws {
		if err := json.Unmarshal(raw, &evs[i]); err != nil {
			evs[i] = Event{Seq: uint64(i + 1)}
			flag(i, "not a readable event: "+err.Error())
			continue
		}
		buf.Reset()
		if err := json.Compact(&buf, raw); err != nil {
			flag(i, "not a readable event: "+err.Error())
			continue
		}
		again, err := json.Marshal(&evs[i])
		if err != nil || !bytes.Equal(buf.Bytes(), again) {
			flag(i, "stored bytes differ from the event's encoding (a member format v2 does not define, or a value spelled differently): altered")
		}
	}
	return evs, bad
}

func verify(session string, evs []Event, bad map[int]string, keys Keyring) Report {
	r := Report{Session: session, Events: len(evs)}
	if len(evs) == 0 {
		r.Status, r.Problem = VerifyFailed, "no events"
		return r
	}
	if r.Session == "" {
		r.Session = evs[0].Session
	}
	r.LastSeq = evs[len(evs)-1].Seq
	fail := func(seq uint64, format string, args ...any) Report {
		r.Status, r.FirstBad, r.Problem = VerifyFailed, seq, fmt.Sprintf(format, args...)
		return r
	}
	var (
		prev       string
		lastSigned = -1
		ended      bool
	)
	for i := range evs {
		ev := &evs[i]
		want := uint64(i + 1)
		if why, ok := bad[i]; ok {
			return fail(ev.Seq, "%s", why)
		}
		switch {
		case ev.V < 2:
			return fail(ev.Seq, "format v%d: recorded before hash chains and signatures (v2); it cannot be verified", ev.V)
		case ev.V > Version:
			return fail(ev.Seq, "format v%d is newer than this airlock (v%d): upgrade airlock to verify it", ev.V, Version)
		}
		if ev.Session != r.Session {
			return fail(ev.Seq, "event of session %s in session %s (replayed from another session)", ev.Session, r.Session)
		}
		switch {
		case ev.Seq == want:
		case ev.Seq > want:
			for _, later := range evs[i+1:] {
				if later.Seq == want {
					return fail(want, "seq %d comes after seq %d: events were reordered", want, ev.Seq)
				}
			}
			if want == 1 {
				return fail(1, "seq 1 missing: the session's first %d events are not in the record", ev.Seq-1)
			}
			return fail(want, "seq %d missing (after seq %d comes seq %d): an event was removed", want, want-1, ev.Seq)
		case ev.Seq == want-1:
			return fail(ev.Seq, "seq %d stored twice with different content (a second writer, or an inserted event)", ev.Seq)
		default:
			return fail(ev.Seq, "seq %d comes after seq %d: events were reordered", ev.Seq, want-1)
		}
		if ended {
			return fail(ev.Seq, "%s after the session's end at seq %d", ev.Type, want-1)
		}
		if i == 0 && ev.Type != TypeSessionStart && ev.Type != TypeAuthFailed {
			return fail(ev.Seq, "the session begins with %s, want session.start or auth.failed", ev.Type)
		}
		if i > 0 && (ev.Type == TypeSessionStart || ev.Type == TypeAuthFailed) {
			return fail(ev.Seq, "%s in the middle of a session (seq %d)", ev.Type, ev.Seq)
		}
		sum, err := hashEvent(ev)
		if err != nil {
			return fail(ev.Seq, "cannot encode the event: %v", err)
		}
		if hex.EncodeToString(sum[:]) != ev.Hash {
			return fail(ev.Seq, "hash does not match the event's content: the event was altered")
		}
		if ev.Prev != prev {
			if i == 0 {
				return fail(ev.Seq, "the first event links to a previous event: events before it were removed")
			}
			return fail(ev.Seq, "prev does not match the hash of seq %d: the chain is broken (an event removed, inserted, replaced or swapped)", ev.Seq-1)
		}
		switch {
		case ev.Sig == "" && ev.Key == "":
			if ev.V >= 3 && MustSign(ev) || ev.V == 2 && signedV2(ev) {
				return fail(ev.Seq, "%s carries no signature, and the gateway signs every %s: the signature was removed or the event forged", ev.Type, ev.Type)
			}
		case ev.Sig == "" || ev.Key == "":
			return fail(ev.Seq, "key and sig must go together")
		default:
			pub, ok := keys[ev.Key]
			if !ok {
				return fail(ev.Seq, "signed with key %s, which is not trusted (trusted: %s)", ev.Key, trustedList(keys))
			}
			if r.Key != "" && ev.Key != r.Key {
				return fail(ev.Seq, "signed with key %s, the session's earlier events with %s", ev.Key, r.Key)
			}
			if !verifySig(pub, &sum, ev.Sig) {
				return fail(ev.Seq, "signature does not verify under %s: the event was forged or altered", ev.Key)
			}
			r.Key = ev.Key
			lastSigned = i
		}
		if ev.Type == TypeSessionEnd || ev.Type == TypeAuthFailed {
			ended = true
		}
		prev = ev.Hash
	}
	if !ended {
		r.Status = VerifyUnterminated
		r.Unauthenticated = len(evs) - 1 - lastSigned
		r.Problem = fmt.Sprintf("no session.end after seq %d: the gateway stopped mid-session, or the session is still open", r.LastSeq)
		if r.Unauthenticated > 0 {
			r.Problem += fmt.Sprintf("; the last %d event(s) come after the last signature and are covered by the hash chain only", r.Unauthenticated)
		}
		return r
	}
	r.Status = VerifyOK
	return r
}

func verifySig(pub ed25519.PublicKey, sum *[sha256.Size]byte, sig string) bool {
	b, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(b) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pub, signedMessage(sum), b)
}

func trustedList(keys Keyring) string {
	if len(keys) == 0 {
		return "none"
	}
	fps := keys.Fingerprints()
	slices.Sort(fps)
	return strings.Join(fps, ", ")
}
