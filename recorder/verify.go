package recorder

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"

	"fmt"
	segjson "github.com/segmentio/encoding/json"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/airlockhq/airlock/internal/plural"
)

// Verification outcomes, Report.Status.
const (
	// VerifyOK: the session is complete and every event checks: seqs 1..n
	// without gaps, each Prev the previous Hash, each Hash its content,
	// every signature valid under one trusted key, ending with a signed
	// session.end (or a single signed auth.failed).
	VerifyOK = "ok"
	// VerifyUnterminated: everything present checks, but the session has
	// neither an end nor a session.interrupted note: it is still open, or
	// its gateway stopped and no gateway has noted it yet, or events were
	// removed from its end (the record alone cannot tell which; the
	// gateway's list can, see docs/recorder.md). Events after the last
	// signature are covered by the hash chain only: the chained, unsigned
	// tail, which Report.Unauthenticated counts.
	VerifyUnterminated = "unterminated"
	// VerifyInterrupted: everything present checks, the session has no
	// end, and a gateway recorded a signed session.interrupted note right
	// after its last event: the gateway process writing it stopped (a
	// crash). Report.Interrupted says who noticed and when;
	// Report.Unauthenticated counts the chained, unsigned tail.
	VerifyInterrupted = "interrupted"
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
	// Unauthenticated is how many events of an unterminated or
	// interrupted session come after its gateway's last signature: the
	// chained, unsigned tail, linked by the hash chain but signed by none.
	Unauthenticated int `json:"unauthenticated,omitempty"`
	// Interrupted is the session's session.interrupted note, checked.
	Interrupted *NoteReport `json:"interrupted,omitempty"`
}

// NoteReport is a checked session.interrupted note.
type NoteReport struct {
	// Seq is the note's seq; LastSeq the last seq of the session it
	// attests (Seq-1).
	Seq     uint64 `json:"seq"`
	LastSeq uint64 `json:"last_seq"`
	// Instance is the stopped gateway process; By the one that noticed,
	// Gateway its host, Key the key it signed with.
	Instance string    `json:"instance"`
	By       string    `json:"by"`
	Gateway  string    `json:"gateway,omitempty"`
	Key      string    `json:"key"`
	Time     time.Time `json:"time"`
	Reason   string    `json:"reason"`
	// Resumed: the session's gateway wrote events after the note (it had
	// lost NATS for longer than the heartbeat timeout, it had not
	// stopped).
	Resumed bool `json:"resumed,omitempty"`
}

// OK reports whether the session verified completely.
func (r Report) OK() bool { return r.Status == VerifyOK }

// Verify checks one session's events, in the order given (a reader's
// order: by seq), against the trusted keys. session names the session the
// events must belong to; empty takes it from the first event. It is pure:
// no clock, no I/O. Events that reference values stored in chunks fail
// here: check them with VerifyStored.
func Verify(session string, evs []Event, keys Keyring) Report {
	return checkRefs(verify(session, evs, decodeFlags{}, keys), evs, nil)
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
	evs, f := decodeStored(raws)
	return evs, f.bad
}

// decodeFlags is what decoding stored bodies learned for verification:
// bad as DecodeRaw's, and sums[i] the SHA-256 of event i's canonical
// encoding for every i not in bad (nil when the events were not decoded
// from stored bodies: verify hashes them itself).
type decodeFlags struct {
	bad  map[int]string
	sums [][sha256.Size]byte
}

// sum is the hash of the canonical encoding of evs[i], ev.
func (f decodeFlags) sum(i int, ev *Event) ([sha256.Size]byte, error) {
	if f.sums != nil {
		return f.sums[i], nil
	}
	return hashEvent(ev)
}

// decodeStored is DecodeRaw with the events' hashes. Events decode
// independently: a long session is split between the processors (a
// reviewer's page for 10,000 statements waits on this), and each part
// hashes what it decoded, from the encoding its round-trip check made.
func decodeStored(raws []json.RawMessage) ([]Event, decodeFlags) {
	evs := make([]Event, len(raws))
	f := decodeFlags{sums: make([][sha256.Size]byte, len(raws))}
	parts := 1
	if len(raws) >= 2*decodePart {
		parts = min(runtime.GOMAXPROCS(0), len(raws)/decodePart)
	}
	bads := make([]map[int]string, parts)
	var wg sync.WaitGroup
	for p := range parts {
		lo, hi := p*len(raws)/parts, (p+1)*len(raws)/parts
		wg.Go(func() { bads[p] = decodeRange(raws, evs, f.sums, lo, hi) })
	}
	wg.Wait()
	for _, b := range bads {
		for i, why := range b {
			if f.bad == nil {
				f.bad = map[int]string{}
			}
			f.bad[i] = why
		}
	}
	return evs, f
}

// decodePart is the fewest events decodeStored gives one goroutine.
const decodePart = 1000

// decodeRange decodes raws[lo:hi] into evs, checks that each body is the
// encoding of the event it decodes to, and puts the hash of each event's
// canonical encoding in sums.
func decodeRange(raws []json.RawMessage, evs []Event, sums [][sha256.Size]byte, lo, hi int) (bad map[int]string) {
	flag := func(i int, why string) {
		if bad == nil {
			bad = map[int]string{}
		}
		bad[i] = why
	}
	var buf bytes.Buffer
	for i := lo; i < hi; i++ {
		raw := raws[i]
		if err := decodeEvent(raw, &evs[i]); err != nil {
			evs[i] = Event{Seq: uint64(i + 1)}
			flag(i, "not a readable event: "+err.Error())
			continue
		}
		again, err := json.Marshal(&evs[i])
		if err != nil || !bytes.Equal(raw, again) {
			buf.Reset()
			if err := json.Compact(&buf, raw); err != nil {
				flag(i, "not a readable event: "+err.Error())
				continue
			}
			if err != nil || !bytes.Equal(buf.Bytes(), again) {
				flag(i, "stored bytes differ from the event's encoding (a member format v2 does not define, or a value spelled differently): altered")
				continue
			}
		}
		sum, err := sealedSum(again, &evs[i])
		if err != nil {
			flag(i, "cannot encode the event: "+err.Error())
			continue
		}
		sums[i] = sum
	}
	return bad
}

// decodeEvent decodes one stored event body. It reads with
// github.com/segmentio/encoding/json, which takes half encoding/json's
// time (decoding was half the CPU of a reviewer's page for a long
// session); decodeRange then encodes the event again with encoding/json,
// the reference, and compares bytes, so a difference between the two
// decoders can make a record fail verification, never pass it with a
// value its stored bytes do not encode. TestEncoderMatchesJSON holds the
// two decoders to the same events.
func decodeEvent(raw []byte, ev *Event) error {
	return segjson.Unmarshal(raw, ev)
}

// sealedSum is the hash of ev's canonical encoding, given enc, ev's
// encoding with hash and sig (json.Marshal's, so Canonical's but for
// those two members): enc without them. Every member before sig is a
// number or a string, and a string holds no unescaped quote, so the
// first `,"hash":"` and `,"sig":"` before any '{' or '[' are those
// members. When enc is not shaped so (a string of the head holds a brace),
// it hashes Canonical's encoding instead.
func sealedSum(enc []byte, ev *Event) ([sha256.Size]byte, error) {
	head := enc
	if k := bytes.IndexAny(enc[1:], "{["); k >= 0 {
		head = enc[:k+1]
	}
	// cut is where the member `,"name":"value"` starts and ends in head;
	// ok is false when the value is set and the member is not found.
	cut := func(name, value string, from int) (at, end int, ok bool) {
		if value == "" {
			return from, from, true
		}
		m := `,"` + name + `":"` + value + `"`
		k := bytes.Index(head[from:], []byte(m))
		if k < 0 {
			return 0, 0, false
		}
		return from + k, from + k + len(m), true
	}
	h0, h1, ok1 := cut("hash", ev.Hash, 0)
	s0, s1, ok2 := cut("sig", ev.Sig, h1)
	if !ok1 || !ok2 {
		return hashEvent(ev)
	}
	h := sha256.New()
	h.Write(enc[:h0])
	h.Write(enc[h1:s0])
	h.Write(enc[s1:])
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum, nil
}

func verify(session string, evs []Event, f decodeFlags, keys Keyring) Report {
	r := Report{Session: session, Events: len(evs)}
	if len(evs) == 0 {
		r.Status, r.Problem = VerifyFailed, "no events"
		return r
	}
	if r.Session == "" {
		r.Session = evs[0].Session
	}
	fail := func(seq uint64, format string, args ...any) Report {
		r.Status, r.FirstBad, r.Problem = VerifyFailed, seq, fmt.Sprintf(format, args...)
		return r
	}
	// A session.interrupted note is another gateway's, written beside the
	// session's chain, not in it: the chain is checked without it, the
	// note after.
	all := evs
	evs, f, notes := splitNotes(evs, f)
	bad := f.bad
	if len(evs) == 0 {
		return fail(all[0].Seq, "only a session.interrupted note, no events of the session")
	}
	r.LastSeq = evs[len(evs)-1].Seq
	var (
		prev       string
		lastSigned = -1
		ended      bool
		endSeq     uint64
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
				return fail(1, "seq 1 missing: the session's first %s not in the record", plural.Of(ev.Seq-1, "event is", "events are"))
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
		sum, err := f.sum(i, ev)
		if err != nil {
			return fail(ev.Seq, "cannot encode the event: %v", err)
		}
		if !hashIs(&sum, ev.Hash) {
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
			ended, endSeq = true, ev.Seq
		}
		prev = ev.Hash
	}
	if bad, ok := verifyNotes(&r, evs, notes, ended, endSeq, keys); !ok {
		return bad
	}
	if ended {
		r.Status = VerifyOK
		return r
	}
	r.Unauthenticated = len(evs) - 1 - lastSigned
	unterminated(&r)
	return r
}

// hashIs reports whether hash is sum in hex, as an event's Hash spells it.
func hashIs(sum *[sha256.Size]byte, hash string) bool {
	var h [2 * sha256.Size]byte
	hex.Encode(h[:], sum[:])
	return string(h[:]) == hash
}

// splitNotes sets session.interrupted notes apart from the chain's
// events, keeping f's flags and sums with the events they concern.
func splitNotes(evs []Event, f decodeFlags) (chain []Event, chainF decodeFlags, notes []note) {
	if !slices.ContainsFunc(evs, func(ev Event) bool { return ev.Type == TypeSessionInterrupted }) {
		return evs, f, nil
	}
	chain = make([]Event, 0, len(evs))
	if f.sums != nil {
		chainF.sums = make([][sha256.Size]byte, 0, len(evs))
	}
	for i := range evs {
		why, flagged := f.bad[i]
		if evs[i].Type == TypeSessionInterrupted {
			notes = append(notes, note{&evs[i], why})
			continue
		}
		if flagged {
			if chainF.bad == nil {
				chainF.bad = map[int]string{}
			}
			chainF.bad[len(chain)] = why
		}
		chain = append(chain, evs[i])
		if f.sums != nil {
			chainF.sums = append(chainF.sums, f.sums[i])
		}
	}
	return chain, chainF, notes
}

// note is a session.interrupted event and why its stored bytes are not
// canonical, if they are not.
type note struct {
	ev  *Event
	bad string
}

// verifyNotes checks a session's note against its verified chain and
// records it in r; a failure comes back as the report to return.
func verifyNotes(r *Report, chain []Event, notes []note, ended bool, endSeq uint64, keys Keyring) (Report, bool) {
	fail := func(seq uint64, format string, args ...any) (Report, bool) {
		r.Status, r.FirstBad, r.Problem = VerifyFailed, seq, fmt.Sprintf(format, args...)
		return *r, false
	}
	for k, nt := range notes {
		n := nt.ev
		if k > 0 {
			return fail(n.Seq, "a second session.interrupted note (the stream keeps one per session)")
		}
		nr, failed := checkNote(r.Session, n, nt.bad, keys)
		if failed != "" {
			return fail(n.Seq, "session.interrupted note: %s", failed)
		}
		switch {
		case nr.LastSeq > r.LastSeq:
			return fail(r.LastSeq+1, "truncated: %s marked the session interrupted at %s after seq %d, but the record ends at seq %d: events were removed from its end",
				noteBy(nr), nr.Time.Format(time.RFC3339), nr.LastSeq, r.LastSeq)
		case chain[nr.LastSeq-1].Hash != n.Prev:
			return fail(n.Seq, "session.interrupted note: its prev is not the hash of seq %d: the event at seq %d was altered or replaced after %s noted it",
				nr.LastSeq, nr.LastSeq, noteBy(nr))
		case ended && nr.LastSeq >= endSeq:
			return fail(n.Seq, "session.interrupted note after the session's end at seq %d", endSeq)
		}
		nr.Resumed = nr.LastSeq < r.LastSeq
		r.Interrupted = nr
	}
	return Report{}, true
}

// unterminated fills in the status and problem of a session without an
// end: interrupted when a note follows its last event, unterminated
// otherwise; either way with its chained, unsigned tail.
func unterminated(r *Report) {
	tail := ""
	if r.Unauthenticated > 0 {
		tail = fmt.Sprintf("; chained, unsigned tail: the last %s (seq %d-%d) come after the gateway's last signature, linked by the hash chain but signed by no gateway",
			plural.N(r.Unauthenticated, "event"), r.LastSeq-uint64(r.Unauthenticated)+1, r.LastSeq)
	}
	switch n := r.Interrupted; {
	case n != nil && !n.Resumed:
		r.Status = VerifyInterrupted
		r.Problem = fmt.Sprintf("no session.end: interrupted after seq %d: %s marked it at %s: %s%s",
			n.LastSeq, noteBy(n), n.Time.Format(time.RFC3339), n.Reason, tail)
	case n != nil:
		r.Status = VerifyUnterminated
		r.Problem = fmt.Sprintf("no session.end after seq %d; %s marked the session interrupted after seq %d, but its gateway recorded more after that (it had lost NATS, not stopped): still open, or stopped since%s",
			r.LastSeq, noteBy(n), n.LastSeq, tail)
	default:
		r.Status = VerifyUnterminated
		r.Problem = fmt.Sprintf("no session.end and no session.interrupted after seq %d: the session is still open, or its gateway stopped and no gateway has noted it yet, or events were removed from its end%s",
			r.LastSeq, tail)
	}
}

// checkFormat says why ev's format cannot be verified; ok when it can.
func checkFormat(ev *Event) (string, bool) {
	switch {
	case ev.V < 2:
		return fmt.Sprintf("format v%d: recorded before hash chains and signatures (v2); it cannot be verified", ev.V), false
	case ev.V > Version:
		return fmt.Sprintf("format v%d is newer than this airlock (v%d): upgrade airlock to verify it", ev.V, Version), false
	}
	return "", true
}

// checkNote checks a session.interrupted note by itself: its form, hash
// and signature, under any trusted key (it is another gateway's).
func checkNote(session string, n *Event, bad string, keys Keyring) (*NoteReport, string) {
	if bad != "" {
		return nil, bad
	}
	if f, ok := checkFormat(n); !ok {
		return nil, f
	}
	switch {
	case n.V < 3:
		return nil, fmt.Sprintf("format v%d has no session.interrupted", n.V)
	case n.Session != session:
		return nil, fmt.Sprintf("it is of session %s (replayed from another session)", n.Session)
	case n.Interrupted == nil:
		return nil, "it has no interrupted body"
	case n.Interrupted.LastSeq < 1 || n.Seq != n.Interrupted.LastSeq+1:
		return nil, fmt.Sprintf("its seq %d is not one past the last seq it names (%d)", n.Seq, n.Interrupted.LastSeq)
	}
	sum, err := hashEvent(n)
	if err != nil {
		return nil, fmt.Sprintf("cannot encode it: %v", err)
	}
	if hex.EncodeToString(sum[:]) != n.Hash {
		return nil, "hash does not match its content: it was altered"
	}
	if n.Key == "" || n.Sig == "" {
		return nil, "it carries no signature: forged"
	}
	pub, ok := keys[n.Key]
	if !ok {
		return nil, fmt.Sprintf("signed with key %s, which is not trusted (trusted: %s)", n.Key, trustedList(keys))
	}
	if !verifySig(pub, &sum, n.Sig) {
		return nil, fmt.Sprintf("signature does not verify under %s: forged or altered", n.Key)
	}
	x := n.Interrupted
	return &NoteReport{
		Seq: n.Seq, LastSeq: x.LastSeq, Instance: x.Instance, By: x.By, Gateway: n.Gateway,
		Key: n.Key, Time: n.Time, Reason: x.Reason,
	}, ""
}

// noteBy names who wrote a note: its gateway's host and process.
func noteBy(n *NoteReport) string {
	if n.Gateway == "" {
		return "gateway process " + n.By
	}
	return "gateway " + n.Gateway + " (" + n.By + ")"
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

// Line is the report in one line, as airlock sessions verify prints it
// and the console's verify badge shows it.
func (r Report) Line() string {
	switch r.Status {
	case VerifyOK:
		line := fmt.Sprintf("%s: ok: %s, seq 1-%d, signed with %s", r.Session, plural.N(r.Events, "event"), r.LastSeq, r.Key)
		if n := r.Interrupted; n != nil {
			line += fmt.Sprintf(" (marked interrupted after seq %d by %s at %s, but its gateway had only lost NATS and recorded on)",
				n.LastSeq, n.Gateway, n.Time.Format(time.RFC3339))
		}
		return line
	case VerifyInterrupted:
		return fmt.Sprintf("%s: INTERRUPTED (intact): %s, seq 1-%d, signed with %s: %s", r.Session, plural.N(r.Events, "event"), r.LastSeq, r.Key, r.Problem)
	case VerifyUnterminated:
		return fmt.Sprintf("%s: UNTERMINATED: %s: %s", r.Session, plural.N(r.Events, "event"), r.Problem)
	}
	if r.FirstBad > 0 {
		return fmt.Sprintf("%s: FAILED at seq %d: %s", r.Session, r.FirstBad, r.Problem)
	}
	return fmt.Sprintf("%s: FAILED: %s", r.Session, r.Problem)
}
