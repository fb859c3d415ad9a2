package proxy

import (
	"io"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/recorder"
)

// AppendRead appends exactly n bytes read from r to buf and returns it.
// The buffer grows as bytes arrive, never to what a peer merely announces:
// by four times (from 64 KiB) until the next step would pass a quarter of
// the final length, then once to the final length. So reading a message
// costs at most about 1.33 times its size at the peak, and as much in
// allocations, where growing by append's factor (1.25 for large slices)
// allocated five times the message before it was whole; and a peer that
// announces a large message must send a sixteenth of it before the buffer
// takes its full size.
//
// more says that more bytes will be appended after these (a MySQL command
// split into 16 MiB packets). The first such read aims a sixteenth past
// its end, so that the short packet that commonly closes the message (a
// statement a little over 16 MiB) is read without copying the first one;
// later reads grow fourfold past their end rather than stopping at it, so
// a message of many packets is not copied once per packet. A closing
// packet that does not fit costs one copy, which keeps the buffer's peak
// under twice the message.
func AppendRead(r io.Reader, buf []byte, n int, more bool) ([]byte, error) {
	end := len(buf) + n
	aim := end // the capacity that, reached, is not grown past
	if more {
		aim = end + end/16
	}
	later := more && len(buf) > 0
	for len(buf) < end {
		if len(buf) == cap(buf) {
			c := max(4*cap(buf), 64<<10)
			if !later && 4*c > aim {
				c = aim
			}
			nb := make([]byte, len(buf), c)
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(r, buf[len(buf):min(cap(buf), end)])
		buf = buf[:len(buf)+m]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
	}
	return buf, nil
}

// releasing is set while a ReleaseMemory waits for its second pass.
var releasing atomic.Bool

// ReleaseMemory returns the memory the gateway freed to the operating
// system, after a very large message: the Go runtime keeps freed heap for
// reuse and gives it back over minutes, so a gateway that relayed one 200
// MB statement would otherwise stay that much larger. It does so at once
// and once more two seconds later, for what the statement's recording left
// to die after it (the embedded NATS server's caches of what it stored).
func ReleaseMemory() {
	debug.FreeOSMemory()
	if releasing.CompareAndSwap(false, true) {
		time.AfterFunc(2*time.Second, func() {
			releasing.Store(false)
			debug.FreeOSMemory()
		})
	}
}

// LargeMessage is the size from which a client message (a Postgres
// message, a MySQL command) counts as large: its smaller buffers are
// collected once it is read (AfterLargeRead) and its memory is returned to
// the operating system once it is handled (ReleaseLarge).
const LargeMessage = 16 << 20

// KeepBuf is the largest read buffer a session keeps for its next message;
// larger ones belong to their message alone (see TextOf).
const KeepBuf = 1 << 20

// AfterLargeRead collects, after a large message of n bytes was read, the
// smaller buffers it grew through (up to half its size), before it is
// decided, recorded and forwarded: what those steps allocate then reuses
// that memory instead of adding to it.
func AfterLargeRead(n int) {
	if n >= LargeMessage {
		runtime.GC()
	}
}

// ReleaseLarge returns the memory of a message of n bytes, once the
// gateway is done with it, to the operating system when it was large
// (ReleaseMemory; docs/architecture.md, "Memory and garbage collection").
func ReleaseLarge(n int) {
	if n >= LargeMessage {
		ReleaseMemory()
	}
}

// BorrowedText is the longest statement text a protocol may decide and
// admit as a view of its read buffer (ViewOf) rather than a copy: no
// longer than what the decision cache keys (authorization copies what it
// keeps) and than what the recorder always encodes inside the event
// (recorder.InlineText).
const BorrowedText = min(authz.MaxCachedText, recorder.InlineText)

// ViewOf is b as a string that shares b's memory, for a statement of at
// most BorrowedText bytes in a buffer the session reuses for its next
// message, so that a repeated statement is decided and recorded without a
// copy of its text. Nothing keeps it past the message: authorization
// copies what it caches; Admit copies what outlives the call (the running
// statements' texts, holds, the recent texts a hold shows, denial
// notices); the recorder encodes it during Append. It must not outlive
// the message in the protocol either. A longer text is TextOf's.
func ViewOf(b []byte) string {
	if len(b) > BorrowedText {
		return TextOf(b)
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// TextOf is b as a string. A message larger than KeepBuf is read into a
// buffer of its own, which nothing writes to again, so its text is that
// buffer rather than a copy of it: a 200 MB statement is not held twice. A
// smaller one sits in the session's reused buffer, so it is copied.
func TextOf(b []byte) string {
	if cap(b) <= KeepBuf {
		return string(b)
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
