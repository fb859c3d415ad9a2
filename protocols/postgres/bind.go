package postgres

import (
	"encoding/binary"
	"fmt"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/recorder"
)

// A Bind makes a portal from a prepared statement and its parameters; the
// portal's Execute is what gets recorded, with those parameters. A driver
// binds the same portal (usually the unnamed one) for every execution, so
// a portal keeps its memory from one Bind to the next: the message is
// read in place and the parameters' recorded values are written into the
// portal's own buffer, and binding costs no allocation in the steady
// state.

// keepValues and keepParams bound what a portal keeps for its next Bind,
// and keepParams what the session keeps of a Bind's parameter list: the
// memory of a larger one (a parameter of megabytes under a high
// recorder.param_max_bytes, 65,535 parameters) goes at the next Bind, as
// it did before portals kept theirs.
const (
	keepValues = 64 << 10
	keepParams = 256
)

// bound is a portal: the statement it runs and the parameters it was
// bound with.
type bound struct {
	// name is the portal's, stmt the statement's it was last bound to.
	name, stmt string
	v          *authz.Verdict
	params     []recorder.Param
	// values holds the recorded parameters' values; params' Values are
	// views of it. The portal's next Bind writes over it: nothing keeps
	// them past its Executes (the recorder encodes them when each is
	// admitted, and what outlives that copies them, see proxy.ViewOf).
	values []byte
}

// bindMsg is a Bind message's fields, as views of its body.
type bindMsg struct {
	portal, stmt []byte
	// formats are the parameters' format codes: none (all text), one
	// (for all) or one each.
	formats []byte
	// params are the parameters' values, nil for NULL.
	params [][]byte
}

// release lets go of the message the fields are views of (a Bind of
// megabytes has a buffer of its own), keeping the parameter list's memory
// for the next Bind unless it is large.
func (m *bindMsg) release() {
	clear(m.params)
	m.params = reuse(m.params, keepParams)
	m.portal, m.stmt, m.formats = nil, nil, nil
}

// reuse is s emptied for reuse, or nil when its capacity passes most.
func reuse[E any](s []E, most int) []E {
	if cap(s) > most {
		return nil
	}
	return s[:0]
}

// binary reports whether parameter i is in binary format.
func (m *bindMsg) binary(i int) bool {
	switch n := len(m.formats) / 2; {
	case n == 1:
		i = 0
	case i >= n:
		return false
	}
	return binary.BigEndian.Uint16(m.formats[2*i:]) == 1
}

// decode reads body as a Bind, reusing m's parameter slice. The result
// format codes are checked, not kept: the message is forwarded as it
// came.
func (m *bindMsg) decode(body []byte) error {
	var ok bool
	if m.portal, body, ok = cutCString(body); !ok {
		return &frameError{"malformed Bind: the portal name has no terminating zero byte"}
	}
	if m.stmt, body, ok = cutCString(body); !ok {
		return &frameError{"malformed Bind: the statement name has no terminating zero byte"}
	}
	n, body, ok := cutCount(body)
	if !ok || len(body) < 2*n {
		return &frameError{"malformed Bind: its parameter format codes run past the message"}
	}
	m.formats, body = body[:2*n], body[2*n:]
	if n, body, ok = cutCount(body); !ok {
		return &frameError{"malformed Bind: it ends before its parameter count"}
	}
	m.params = m.params[:0]
	for i := range n {
		if len(body) < 4 {
			return &frameError{fmt.Sprintf("malformed Bind: it ends before parameter %d of %d", i+1, n)}
		}
		size := int32(binary.BigEndian.Uint32(body))
		body = body[4:]
		switch {
		case size == -1:
			m.params = append(m.params, nil)
			continue
		case size < 0 || int(size) > len(body):
			return &frameError{fmt.Sprintf("malformed Bind: parameter %d of %d claims %d bytes, more than the message holds", i+1, n, size)}
		}
		m.params = append(m.params, body[:size:size])
		body = body[size:]
	}
	if n, body, ok = cutCount(body); !ok || len(body) < 2*n {
		return &frameError{"malformed Bind: its result format codes run past the message"}
	}
	return nil
}

// cutCount cuts a 16-bit count from the front of b.
func cutCount(b []byte) (n int, rest []byte, ok bool) {
	if len(b) < 2 {
		return 0, nil, false
	}
	return int(binary.BigEndian.Uint16(b)), b[2:], true
}

func (s *session) bind(n int) error {
	body, err := s.body(n, 'B')
	if err != nil {
		return err
	}
	m := &s.bindMsg
	defer m.release()
	if err := m.decode(body); err != nil {
		return err
	}
	b := s.portals[string(m.portal)]
	if b == nil {
		b = &bound{name: string(m.portal)}
		s.portals[b.name] = b
	}
	if b.stmt != string(m.stmt) {
		b.stmt = string(m.stmt)
	}
	b.params, b.values = reuse(b.params, keepParams), reuse(b.values, keepValues)
	var types []uint32
	for i, v := range m.params {
		var p recorder.Param
		binary := m.binary(i)
		if binary && v != nil {
			if types == nil {
				types = s.paramTypesOf(b.stmt)
			}
			// A binary value of a known type is kept as its text
			// form (as the MySQL binary protocol's are), so people
			// read 42 rather than AAAAKg==.
			if i < len(types) {
				var name string
				var ok bool
				s.paramText, name, ok = binaryText(reuse(s.paramText, keepValues), types[i], v)
				if ok {
					p, b.values = s.sess.AppendParam(b.values, s.paramText, false, false)
					p.Type, p.Size = name, len(v)
					b.params = append(b.params, p)
					continue
				}
			}
		}
		p, b.values = s.sess.AppendParam(b.values, v, binary, v == nil)
		b.params = append(b.params, p)
	}
	b.v = s.stmts[b.stmt]
	if b.v == nil {
		// A statement made with SQL PREPARE: decided as its EXECUTE.
		if pv, ok := s.az.Prepared(s.sess.Grant(), b.stmt); ok {
			b.v = &pv
		}
	}
	s.push(pending{kind: 'B', name: b.name, stmt: b.stmt})
	return writeFrame(s.uw, 'B', body)
}
