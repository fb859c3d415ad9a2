package mysql

import (
	"bufio"
	"fmt"
	"io"

	"github.com/airlockhq/airlock/proxy"
)

// The MySQL packet: a 3-byte little-endian payload length, a 1-byte
// sequence id, then the payload. A payload of maxPayload bytes or more is
// split into physical packets of exactly maxPayload bytes followed by one
// shorter (possibly empty) packet; together they form one logical packet.
const (
	headerSize = 4
	maxPayload = 1<<24 - 1
)

// Limits on what a peer may make the gateway hold. Payloads are read
// incrementally, never allocated at the size a peer announces.
const (
	// maxHandshake caps a handshake response; real ones are a few hundred
	// bytes.
	maxHandshake = 64 << 10
	// maxControl caps the upstream packets the gateway reads whole to
	// follow a response (OK, ERR, EOF, column counts, prepare answers).
	maxControl = 16 << 20
)

// frameError is a malformed or oversized packet; its text names what was
// wrong.
type frameError struct {
	msg        string
	tooLong    bool
	outOfOrder bool // a packet's sequence id was not the next one
	// next is, for tooLong, the header of the physical packet whose
	// payload was not read.
	next header
}

func (e *frameError) Error() string { return "mysql: " + e.msg }

// header is one physical packet's header.
type header struct {
	n   int  // payload length
	seq byte // sequence id
}

// last reports whether this physical packet ends its logical packet.
func (h header) last() bool { return h.n < maxPayload }

func readHeader(r io.Reader) (header, error) {
	var b [headerSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return header{}, err
	}
	return header{n: int(b[0]) | int(b[1])<<8 | int(b[2])<<16, seq: b[3]}, nil
}

func putHeader(b []byte, n int, seq byte) {
	b[0], b[1], b[2], b[3] = byte(n), byte(n>>8), byte(n>>16), seq
}

func writeHeader(w *bufio.Writer, h header) error {
	var b [headerSize]byte
	putHeader(b[:], h.n, h.seq)
	_, err := w.Write(b[:])
	return err
}

// readPayload reads the rest of a logical packet whose first header is h
// into buf (grown as bytes arrive, so a false length costs the liar, not
// the gateway) and returns it with the sequence id of its last physical
// packet. limit caps the whole payload; what lies beyond it is an error.
func readPayload(r io.Reader, h header, buf []byte, limit int, what string) ([]byte, byte, error) {
	buf = buf[:0]
	for {
		if len(buf)+h.n > limit {
			// What was read comes back with the error, for a caller that
			// reads the rest through (see session.oversized).
			return buf, h.seq, &frameError{msg: fmt.Sprintf("%s of more than %d bytes is larger than the gateway reads whole (%d)", what, len(buf)+h.n, limit), tooLong: true, next: h}
		}
		var err error
		if buf, err = appendFull(r, buf, h.n, !h.last()); err != nil {
			return nil, h.seq, err
		}
		if h.last() {
			return buf, h.seq, nil
		}
		next, err := readHeader(r)
		if err != nil {
			return nil, h.seq, eofIsUnexpected(err)
		}
		if next.seq != h.seq+1 {
			return nil, h.seq, &frameError{msg: fmt.Sprintf("%s continues with sequence id %d, want %d", what, next.seq, h.seq+1), outOfOrder: true}
		}
		h = next
	}
}

// appendFull appends exactly n bytes from r to buf, growing it as they
// arrive (see proxy.AppendRead).
func appendFull(r io.Reader, buf []byte, n int, more bool) ([]byte, error) {
	buf, err := proxy.AppendRead(r, buf, n, more)
	if err != nil {
		return nil, eofIsUnexpected(err)
	}
	return buf, nil
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writePacket writes payload as one logical packet starting at seq and
// returns the sequence id that follows it.
func writePacket(w *bufio.Writer, seq byte, payload []byte) (byte, error) {
	for {
		n := min(len(payload), maxPayload)
		if err := writeHeader(w, header{n: n, seq: seq}); err != nil {
			return seq, err
		}
		if _, err := w.Write(payload[:n]); err != nil {
			return seq, err
		}
		seq++
		payload = payload[n:]
		if n < maxPayload {
			return seq, nil
		}
	}
}

// lenencInt reads a length-encoded integer at the start of b and returns
// it with the number of bytes it took. ok is false when b is too short or
// starts with 0xff (no integer); null is the 0xfb NULL marker.
func lenencInt(b []byte) (v uint64, n int, null, ok bool) {
	if len(b) == 0 {
		return 0, 0, false, false
	}
	switch b[0] {
	case 0xfb:
		return 0, 1, true, true
	case 0xfc:
		if len(b) < 3 {
			return 0, 0, false, false
		}
		return uint64(b[1]) | uint64(b[2])<<8, 3, false, true
	case 0xfd:
		if len(b) < 4 {
			return 0, 0, false, false
		}
		return uint64(b[1]) | uint64(b[2])<<8 | uint64(b[3])<<16, 4, false, true
	case 0xfe:
		if len(b) < 9 {
			return 0, 0, false, false
		}
		var v uint64
		for i := 8; i >= 1; i-- {
			v = v<<8 | uint64(b[i])
		}
		return v, 9, false, true
	case 0xff:
		return 0, 0, false, false
	}
	return uint64(b[0]), 1, false, true
}

// lenencBytes reads a length-encoded string at the start of b.
func lenencBytes(b []byte) (s []byte, n int, ok bool) {
	v, k, null, ok := lenencInt(b)
	if !ok || null || v > uint64(len(b)-k) {
		return nil, 0, false
	}
	return b[k : k+int(v)], k + int(v), true
}

func appendLenencInt(b []byte, v uint64) []byte {
	switch {
	case v < 0xfb:
		return append(b, byte(v))
	case v < 1<<16:
		return append(b, 0xfc, byte(v), byte(v>>8))
	case v < 1<<24:
		return append(b, 0xfd, byte(v), byte(v>>8), byte(v>>16))
	}
	return append(b, 0xfe, byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
}

func appendLenencBytes(b, s []byte) []byte {
	return append(appendLenencInt(b, uint64(len(s))), s...)
}

// cstring splits a NUL-terminated string off b.
func cstring(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}
