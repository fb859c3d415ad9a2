package ssh

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/airlockhq/airlock/proxy"
	"github.com/airlockhq/airlock/recorder"
)

// chanRecorder records one channel's data as data events.
//
// A terminal (a shell, or any channel with a pty) is recorded in full, for
// replay. Its input is what runs, so each chunk the agent types is
// acknowledged by the recorder before it is forwarded. Its output is
// recorded as it is relayed; the relay stops to wait for acknowledgement
// once `window` bytes or a second's worth of output are unacknowledged.
//
// An exec without a pty is a command that was authorized as a whole; its
// stdin, stdout and stderr are recorded up to `limit` bytes together
// (recorder.max_output_bytes), then only counted, under the same window.
//
// When the recorder does not acknowledge in time, the caller ends the
// session: nothing more is relayed in either direction.
type chanRecorder struct {
	sess   *proxy.Session
	id     uint64
	full   bool
	limit  int64
	window int64
	// maxAge is how old the oldest unacknowledged chunk may get before the
	// relay waits for it.
	maxAge time.Duration

	mu        sync.Mutex
	recorded  int64
	capped    bool
	unflushed int64
	oldest    time.Time
	hold      map[string][]byte // an incomplete UTF-8 sequence per output stream
	err       error             // sticky: once lost, always lost
}

func newChanRecorder(sess *proxy.Session, id uint64, full bool, limit, window int64) *chanRecorder {
	return &chanRecorder{sess: sess, id: id, full: full, limit: limit, window: window, maxAge: time.Second, hold: map[string][]byte{}}
}

// errRecorderLost wraps a failed flush.
type errRecorderLost struct{ err error }

func (e *errRecorderLost) Error() string { return "recording unavailable: " + e.err.Error() }
func (e *errRecorderLost) Unwrap() error { return e.err }

// output records a chunk relayed to the agent (stdout or stderr), waiting
// for the recorder when the window is full.
func (r *chanRecorder) output(stream string, p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.appendLocked(stream, r.allowLocked(p), true)
	return r.maybeFlushLocked()
}

// input records a chunk from the agent before it is forwarded. On a
// terminal it waits until the chunk is acknowledged.
func (r *chanRecorder) input(p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.appendLocked("stdin", r.allowLocked(p), false)
	if r.full {
		return r.flushLocked()
	}
	return r.maybeFlushLocked()
}

// resize records the terminal's size (and, from the pty request, its
// type).
func (r *chanRecorder) resize(cols, rows uint32, term string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sess.Record(recorder.Event{Type: recorder.TypeData, Data: &recorder.Data{
		ID: r.id, Stream: "resize", Cols: int(min(cols, 1<<16)), Rows: int(min(rows, 1<<16)), Term: term,
	}})
}

// note records a signal or similar event on the channel.
func (r *chanRecorder) note(stream, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sess.Record(recorder.Event{Type: recorder.TypeData, Data: &recorder.Data{ID: r.id, Stream: stream, Text: text}})
}

// close records what output streams held back. It does not wait: the
// channel's result event follows, and the next statement or the session's
// end waits for both.
func (r *chanRecorder) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range []string{"stdout", "stderr"} {
		if h := r.hold[s]; len(h) > 0 {
			r.hold[s] = nil
			r.appendLocked(s, h, false)
		}
	}
}

// isCapped reports whether data went unrecorded because of the limit.
func (r *chanRecorder) isCapped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.capped
}

// allowLocked cuts p to what the limit still allows.
func (r *chanRecorder) allowLocked(p []byte) []byte {
	if r.full {
		return p
	}
	room := r.limit - r.recorded
	if room <= 0 {
		if len(p) > 0 {
			r.capped = true
		}
		return nil
	}
	if int64(len(p)) > room {
		r.capped = true
		p = p[:room]
	}
	r.recorded += int64(len(p))
	return p
}

func (r *chanRecorder) appendLocked(stream string, p []byte, hold bool) {
	if hold {
		if h := r.hold[stream]; len(h) > 0 {
			p = append(h, p...)
			r.hold[stream] = nil
		}
		if cut := incompleteUTF8(p); cut > 0 {
			r.hold[stream] = bytes.Clone(p[len(p)-cut:])
			p = p[:len(p)-cut]
		}
	}
	if len(p) == 0 {
		return
	}
	d := &recorder.Data{ID: r.id, Stream: stream}
	if utf8.Valid(p) {
		d.Text = string(p)
	} else {
		d.B64 = bytes.Clone(p)
	}
	r.sess.Record(recorder.Event{Type: recorder.TypeData, Data: d})
	if r.unflushed == 0 {
		r.oldest = time.Now()
	}
	r.unflushed += int64(len(p))
}

func (r *chanRecorder) maybeFlushLocked() error {
	if r.unflushed == 0 {
		return nil
	}
	if r.unflushed < r.window && time.Since(r.oldest) < r.maxAge {
		return nil
	}
	return r.flushLocked()
}

func (r *chanRecorder) flushLocked() error {
	if err := r.sess.Flush(); err != nil {
		r.err = &errRecorderLost{err}
		return r.err
	}
	r.unflushed = 0
	return nil
}

// incompleteUTF8 is how many bytes at the end of p start a UTF-8
// sequence that p does not complete (0 to 3).
func incompleteUTF8(p []byte) int {
	for i := 1; i <= 3 && i <= len(p); i++ {
		c := p[len(p)-i]
		if c < 0x80 {
			return 0
		}
		if c >= 0xC0 { // a lead byte
			need := 2
			switch {
			case c >= 0xF0:
				need = 4
			case c >= 0xE0:
				need = 3
			}
			if need > i {
				return i
			}
			return 0
		}
	}
	return 0
}

// safeText makes bytes from the agent recordable as JSON text: valid
// UTF-8 as it is, other bytes as \xNN, so what is recorded reads back the
// same and names the bytes exactly.
func safeText(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var s strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			const hex = "0123456789abcdef"
			s.WriteString(`\x`)
			s.WriteByte(hex[b[0]>>4])
			s.WriteByte(hex[b[0]&15])
		} else {
			s.Write(b[:n])
		}
		b = b[n:]
	}
	return s.String()
}

func isClosedErr(err error) bool {
	return err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}
