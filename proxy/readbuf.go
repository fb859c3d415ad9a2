package proxy

import (
	"io"
	"runtime/debug"
	"sync/atomic"
	"time"
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
// split into 16 MiB packets): the capacity then grows fourfold past this
// read's end rather than stopping at it, so a message of many packets is
// not copied once per packet.
func AppendRead(r io.Reader, buf []byte, n int, more bool) ([]byte, error) {
	end := len(buf) + n
	for len(buf) < end {
		if len(buf) == cap(buf) {
			c := max(4*cap(buf), 64<<10)
			switch {
			case more:
				c = max(c, end)
			case 4*c > end:
				c = end
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
