package postgres

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/airlockhq/airlock/proxy"
)

// Limits on what a peer may claim. A frame's body is read incrementally,
// never allocated at the size a peer announces.
const (
	// maxMessage is the protocol's own limit: PostgreSQL refuses any
	// message of 1 GiB or more.
	maxMessage = 1<<30 - 1
	// maxDecoded caps the messages the gateway must hold whole to read
	// (Query, Parse, Bind, and the server's small control messages). It is
	// the protocol's own limit, as in PostgreSQL: a statement the server
	// would take must pass. readBody grows its buffer only as bytes
	// arrive, so a claimed length costs nothing until it is sent.
	maxDecoded = maxMessage
	// maxStartup caps a startup packet, as PostgreSQL does (10000 bytes).
	maxStartup = 10000
)

// frameError is a malformed frame; its text names the message and what was
// wrong with it.
type frameError struct{ msg string }

func (e *frameError) Error() string { return "postgres: " + e.msg }

// readHeader reads a typed frame's header: type byte and body length.
// It reads through Peek, so that nothing escapes to the heap: a header
// costs no allocation.
func readHeader(r *bufio.Reader) (byte, int, error) {
	h, err := r.Peek(5)
	if err != nil {
		if len(h) > 0 && err == io.EOF {
			err = io.ErrUnexpectedEOF // as io.ReadFull says it
		}
		return 0, 0, err
	}
	typ := h[0]
	n := int(binary.BigEndian.Uint32(h[1:])) - 4
	_, _ = r.Discard(5)
	if n < 0 || n > maxMessage {
		return 0, 0, &frameError{fmt.Sprintf("message %q claims length %d, outside 4..%d", typ, n+4, maxMessage+4)}
	}
	return typ, n, nil
}

// readBody reads n bytes into buf (grown as bytes arrive, so a false length
// costs the liar, not the gateway; see proxy.AppendRead) and returns it.
func readBody(r *bufio.Reader, buf []byte, n int, what byte) ([]byte, error) {
	if n > maxDecoded {
		return nil, &frameError{fmt.Sprintf("message %q of %d bytes is larger than the gateway reads whole (%d)", what, n, maxDecoded)}
	}
	buf, err := proxy.AppendRead(r, buf[:0], n, false)
	if err != nil {
		return nil, err
	}
	return buf, nil
}

// writeHeader writes a typed frame's header for a body of n bytes.
// It writes into the writer's own buffer (no allocation).
func writeHeader(w *bufio.Writer, typ byte, n int) error {
	if w.Available() < 5 {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	h := binary.BigEndian.AppendUint32(append(w.AvailableBuffer(), typ), uint32(n+4))
	_, err := w.Write(h)
	return err
}

// writeFrame writes a whole typed frame.
func writeFrame(w *bufio.Writer, typ byte, body []byte) error {
	if err := writeHeader(w, typ, len(body)); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// encoder is what pgproto3's messages implement.
type encoder interface {
	Encode(dst []byte) ([]byte, error)
}

// send encodes msgs to w.
func send(w *bufio.Writer, msgs ...encoder) error {
	var buf []byte
	for _, m := range msgs {
		var err error
		if buf, err = m.Encode(buf[:0]); err != nil {
			return err
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}
