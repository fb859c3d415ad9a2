package mysql

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/airlockhq/airlock/authz"
)

// stmt is a statement prepared with COM_STMT_PREPARE in this session.
type stmt struct {
	verdict authz.Verdict
	params  int
	// types are the parameter types (2 bytes each) from the last
	// COM_STMT_EXECUTE that sent them; later executions may omit them.
	types []byte
	// long holds what COM_STMT_SEND_LONG_DATA sent for each parameter
	// since the last execution or reset.
	long map[int]*longData
}

// longData is a parameter sent in pieces: its size and the first bytes,
// up to what the recorder keeps.
type longData struct {
	size int64
	head []byte
}

// lastPrepared is MariaDB's statement id meaning "the statement prepared
// last", which lets a client send PREPARE and EXECUTE in one round trip.
const lastPrepared = 0xffffffff

// paramValue is one decoded parameter of a COM_STMT_EXECUTE.
type paramValue struct {
	typ    string
	null   bool
	value  []byte
	binary bool
	// long is set when the value came by COM_STMT_SEND_LONG_DATA.
	long *longData
}

// Parameter types of the binary protocol.
var typeNames = map[byte]string{
	0x00: "DECIMAL", 0x01: "TINY", 0x02: "SHORT", 0x03: "LONG", 0x04: "FLOAT",
	0x05: "DOUBLE", 0x06: "NULL", 0x07: "TIMESTAMP", 0x08: "LONGLONG", 0x09: "INT24",
	0x0a: "DATE", 0x0b: "TIME", 0x0c: "DATETIME", 0x0d: "YEAR", 0x0e: "NEWDATE",
	0x0f: "VARCHAR", 0x10: "BIT", 0xf5: "JSON", 0xf6: "NEWDECIMAL", 0xf7: "ENUM",
	0xf8: "SET", 0xf9: "TINY_BLOB", 0xfa: "MEDIUM_BLOB", 0xfb: "LONG_BLOB",
	0xfc: "BLOB", 0xfd: "VAR_STRING", 0xfe: "STRING", 0xff: "GEOMETRY",
}

// executeHeader reads the statement id of a COM_STMT_EXECUTE payload
// (command byte included).
func executeHeader(p []byte) (id uint32, ok bool) {
	if len(p) < 10 {
		return 0, false
	}
	return binary.LittleEndian.Uint32(p[1:]), true
}

// parseExecute decodes the parameters of a COM_STMT_EXECUTE payload
// (command byte included) for st, remembering the types it sends.
func parseExecute(p []byte, st *stmt) ([]paramValue, error) {
	bad := func(format string, args ...any) error {
		return &frameError{msg: "malformed COM_STMT_EXECUTE: " + fmt.Sprintf(format, args...)}
	}
	if len(p) < 10 {
		return nil, bad("%d bytes", len(p))
	}
	n := st.params
	if n == 0 {
		return nil, nil
	}
	rest := p[10:]
	nullLen := (n + 7) / 8
	if len(rest) < nullLen+1 {
		return nil, bad("no NULL bitmap for %d parameters", n)
	}
	nulls, bound := rest[:nullLen], rest[nullLen]
	rest = rest[nullLen+1:]
	if bound == 1 {
		if len(rest) < 2*n {
			return nil, bad("no types for %d parameters", n)
		}
		st.types = append(st.types[:0], rest[:2*n]...)
		rest = rest[2*n:]
	} else if len(st.types) != 2*n {
		return nil, bad("parameter types were never sent")
	}
	out := make([]paramValue, n)
	for i := range out {
		typ, unsigned := st.types[2*i], st.types[2*i+1]&0x80 != 0
		name, known := typeNames[typ]
		if !known {
			return nil, bad("parameter %d has unknown type 0x%02x", i+1, typ)
		}
		v := &out[i]
		v.typ = name
		if unsigned {
			v.typ = "UNSIGNED " + name
		}
		if ld := st.long[i]; ld != nil {
			v.long, v.value = ld, ld.head
			continue
		}
		if nulls[i/8]&(1<<(i%8)) != 0 || typ == 0x06 {
			v.null = true
			continue
		}
		var err error
		if v.value, v.binary, rest, err = decodeValue(typ, unsigned, rest); err != nil {
			return nil, bad("parameter %d (%s): %v", i+1, name, err)
		}
	}
	return out, nil
}

// decodeValue reads one binary-protocol value of type typ from b and
// returns its text form (numbers and dates as MySQL prints them).
func decodeValue(typ byte, unsigned bool, b []byte) (val []byte, bin bool, rest []byte, err error) {
	need := func(n int) error {
		if len(b) < n {
			return fmt.Errorf("%d bytes left, need %d", len(b), n)
		}
		return nil
	}
	intText := func(n int) ([]byte, []byte, error) {
		if err := need(n); err != nil {
			return nil, nil, err
		}
		var u uint64
		for i := n - 1; i >= 0; i-- {
			u = u<<8 | uint64(b[i])
		}
		if unsigned {
			return strconv.AppendUint(nil, u, 10), b[n:], nil
		}
		shift := 64 - 8*n
		return strconv.AppendInt(nil, int64(u<<shift)>>shift, 10), b[n:], nil
	}
	switch typ {
	case 0x01:
		val, rest, err = intText(1)
	case 0x02, 0x0d:
		val, rest, err = intText(2)
	case 0x03, 0x09:
		val, rest, err = intText(4)
	case 0x08:
		val, rest, err = intText(8)
	case 0x04:
		if err = need(4); err == nil {
			f := math.Float32frombits(binary.LittleEndian.Uint32(b))
			val, rest = strconv.AppendFloat(nil, float64(f), 'g', -1, 32), b[4:]
		}
	case 0x05:
		if err = need(8); err == nil {
			f := math.Float64frombits(binary.LittleEndian.Uint64(b))
			val, rest = strconv.AppendFloat(nil, f, 'g', -1, 64), b[8:]
		}
	case 0x07, 0x0a, 0x0c, 0x0e:
		val, rest, err = decodeDateTime(b)
	case 0x0b:
		val, rest, err = decodeTime(b)
	default:
		s, n, ok := lenencBytes(b)
		if !ok {
			return nil, false, nil, fmt.Errorf("bad length-encoded value")
		}
		// Bits and geometries are bytes, not text.
		return s, typ == 0x10 || typ == 0xff, b[n:], nil
	}
	return val, false, rest, err
}

func decodeDateTime(b []byte) ([]byte, []byte, error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return nil, nil, fmt.Errorf("truncated date")
	}
	n, d := int(b[0]), b[1:1+int(b[0])]
	var y, mo, da, h, mi, s, us int
	switch n {
	case 0:
	case 4, 7, 11:
		y, mo, da = int(binary.LittleEndian.Uint16(d)), int(d[2]), int(d[3])
		if n >= 7 {
			h, mi, s = int(d[4]), int(d[5]), int(d[6])
		}
		if n == 11 {
			us = int(binary.LittleEndian.Uint32(d[7:]))
		}
	default:
		return nil, nil, fmt.Errorf("date of %d bytes", n)
	}
	out := fmt.Sprintf("%04d-%02d-%02d", y, mo, da)
	if n >= 7 {
		out += fmt.Sprintf(" %02d:%02d:%02d", h, mi, s)
	}
	if n == 11 {
		out += fmt.Sprintf(".%06d", us)
	}
	return []byte(out), b[1+n:], nil
}

func decodeTime(b []byte) ([]byte, []byte, error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return nil, nil, fmt.Errorf("truncated time")
	}
	n, d := int(b[0]), b[1:1+int(b[0])]
	switch n {
	case 0:
		return []byte("00:00:00"), b[1:], nil
	case 8, 12:
	default:
		return nil, nil, fmt.Errorf("time of %d bytes", n)
	}
	sign := ""
	if d[0] == 1 {
		sign = "-"
	}
	days := int64(binary.LittleEndian.Uint32(d[1:]))
	out := fmt.Sprintf("%s%02d:%02d:%02d", sign, days*24+int64(d[5]), d[6], d[7])
	if n == 12 {
		out += fmt.Sprintf(".%06d", binary.LittleEndian.Uint32(d[8:]))
	}
	return []byte(out), b[1+n:], nil
}
