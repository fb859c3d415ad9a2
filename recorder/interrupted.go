package recorder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NoteOutcome is what Interrupt found or did.
type NoteOutcome int

const (
	// NoteWritten: the session.interrupted note is on record now.
	NoteWritten NoteOutcome = iota
	// NoteExists: the session had a note already (another gateway's, or
	// this one's from an earlier try).
	NoteExists
	// NoteEnded: the session has its end; there is nothing to note.
	NoteEnded
)

func (o NoteOutcome) String() string {
	switch o {
	case NoteWritten:
		return "written"
	case NoteExists:
		return "exists"
	case NoteEnded:
		return "ended"
	}
	return "NoteOutcome(" + strconv.Itoa(int(o)) + ")"
}

// ErrSessionActive is returned by Interrupt when the session's record grew
// while it was being noted: its gateway process is writing after all.
var ErrSessionActive = errors.New("the session is still being written")

// Interruption attempts: each reads the session and publishes a note that
// the stream accepts only if nothing was added since the read.
const noteAttempts = 3

// stored is an event read back with its stream sequence.
type stored struct {
	ev        Event
	streamSeq uint64
}

// storedEvents reads one session's events with their stream sequences,
// and the stream sequence of the session's last message of any kind on
// its own subjects (not a batch: see Reader.session): a chunk whose event
// was never stored (the gateway stopped between them) may be the last.
func (r *Reader) storedEvents(ctx context.Context, session string) ([]stored, uint64, error) {
	var out []stored
	var last uint64
	err := r.session(ctx, session, func(_ Chunk, _ bool, seq uint64) {
		last = max(last, seq)
	}, func(_ []byte, ev *Event, seq uint64, batched bool) {
		out = append(out, stored{*ev, seq})
		if !batched {
			// A batch is on the instance's subject, not the session's:
			// the note's expectation covers the session's subjects.
			last = max(last, seq)
		}
	})
	return out, last, err
}

// Interrupt records that the gateway process that wrote session stopped
// without ending it: it reads the session and appends a
// session.interrupted note (Interruption) with seq one past the last, prev
// that event's hash, this recorder's gateway name and key, and reason.
// stopped must be the session's start.instance and by this process's
// instance.
//
// The note is published with the stream's expected last subject sequence
// on the session's subjects, so it is stored only if the session is as it
// was read: two gateways noting at once store one note, and a session
// whose process writes after all gets none (ErrSessionActive). Its
// Nats-Msg-Id is <session>-interrupted. A session that has an end or a
// note already is left alone, so Interrupt can be called again safely.
func (r *Recorder) Interrupt(ctx context.Context, rd *Reader, session, stopped, by, reason string) (NoteOutcome, error) {
	var grew bool
	var lastSeen uint64
	for range noteAttempts {
		evs, lastStream, err := rd.storedEvents(ctx, session)
		if err != nil {
			return 0, fmt.Errorf("recorder: interrupt %s: %w", session, err)
		}
		var start, last *Event
		for i := range evs {
			ev := &evs[i].ev
			switch ev.Type {
			case TypeSessionEnd, TypeAuthFailed:
				return NoteEnded, nil
			case TypeSessionInterrupted:
				return NoteExists, nil
			case TypeSessionStart:
				start = ev
			}
			if last == nil || ev.Seq > last.Seq {
				last = ev
			}
		}
		if start == nil {
			return 0, fmt.Errorf("recorder: interrupt %s: the record has no session.start", session)
		}
		if start.Start == nil || start.Start.Instance != stopped {
			return 0, fmt.Errorf("recorder: interrupt %s: written by gateway process %q, not %q", session, startInstance(start), stopped)
		}
		if lastSeen != 0 && last.Seq > lastSeen {
			grew = true
			break
		}
		lastSeen = last.Seq
		meta := start.Meta
		meta.Gateway = r.gateway
		ev := Event{
			V: Version, Type: TypeSessionInterrupted, Session: session,
			Seq: last.Seq + 1, Time: time.Now().UTC(), Prev: last.Hash, Meta: meta,
			Interrupted: &Interruption{Instance: stopped, LastSeq: last.Seq, By: by, Reason: reason},
		}
		body, err := r.seal(&ev)
		if err != nil {
			return 0, fmt.Errorf("recorder: interrupt %s: %w", session, err)
		}
		msg := &nats.Msg{
			Subject: r.prefix + "." + session + "." + KindInterrupted,
			Data:    body,
			Header: nats.Header{
				jetstream.MsgIDHeader:                   []string{session + "-interrupted"},
				jetstream.ExpectedLastSubjSeqHeader:     []string{strconv.FormatUint(lastStream, 10)},
				jetstream.ExpectedLastSubjSeqSubjHeader: []string{r.prefix + "." + session + ".>"},
			},
		}
		pa, err := r.js.PublishMsg(ctx, msg)
		var apiErr *jetstream.APIError
		switch {
		case err == nil && pa.Duplicate:
			return NoteExists, nil
		case err == nil:
			r.log.Info("session marked interrupted", "session", session, "instance", stopped, "last_seq", last.Seq, "reason", reason)
			return NoteWritten, nil
		case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
			// Something was stored meanwhile: another gateway's note, or
			// the session's own events. Read again and see which.
			continue
		default:
			return 0, fmt.Errorf("recorder: interrupt %s: publish: %w", session, err)
		}
	}
	if grew {
		return 0, fmt.Errorf("recorder: interrupt %s: %w (events after seq %d appeared)", session, ErrSessionActive, lastSeen)
	}
	return 0, fmt.Errorf("recorder: interrupt %s: the session kept changing while it was read", session)
}

func startInstance(ev *Event) string {
	if ev.Start == nil {
		return ""
	}
	return ev.Start.Instance
}

// seal hashes and signs an event written outside a Log (a note) and
// returns its stored body.
func (r *Recorder) seal(ev *Event) ([]byte, error) {
	ev.Hash, ev.Key, ev.Sig = "", r.signer.Fingerprint(), ""
	c, err := canonicalFast(ev)
	if err != nil {
		return nil, err
	}
	if c.replaced {
		if c, err = normalize(ev, c); err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(c.b)
	ev.Hash = hex.EncodeToString(sum[:])
	ev.Sig = r.signer.sign(&sum)
	return c.sealed(ev.Hash, ev.Sig), nil
}
