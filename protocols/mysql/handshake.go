package mysql

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Capability flags (MySQL's CLIENT_* constants).
const (
	capLongPassword     = 1 << 0 // also MariaDB's CLIENT_MYSQL
	capFoundRows        = 1 << 1
	capLongFlag         = 1 << 2
	capConnectWithDB    = 1 << 3
	capNoSchema         = 1 << 4
	capCompress         = 1 << 5
	capODBC             = 1 << 6
	capLocalFiles       = 1 << 7
	capIgnoreSpace      = 1 << 8
	capProtocol41       = 1 << 9
	capInteractive      = 1 << 10
	capSSL              = 1 << 11
	capTransactions     = 1 << 13
	capSecureConnection = 1 << 15
	capMultiStatements  = 1 << 16
	capMultiResults     = 1 << 17
	capPSMultiResults   = 1 << 18
	capPluginAuth       = 1 << 19
	capConnectAttrs     = 1 << 20
	capPluginAuthLenenc = 1 << 21
	capSessionTrack     = 1 << 23
	capDeprecateEOF     = 1 << 24
	capZstd             = 1 << 26
	capQueryAttributes  = 1 << 27
)

// serverCaps is what the gateway offers clients. It leaves out every flag
// that changes the shape of packets the gateway relays untouched
// (CLIENT_DEPRECATE_EOF, CLIENT_SESSION_TRACK, CLIENT_QUERY_ATTRIBUTES,
// compression, MariaDB's extended capabilities), so the classic format
// holds on both legs. CLIENT_LONG_PASSWORD is set, which tells MariaDB
// clients not to use extended capabilities.
const serverCaps = capLongPassword | capFoundRows | capLongFlag | capConnectWithDB |
	capLocalFiles | capIgnoreSpace | capProtocol41 | capInteractive | capTransactions |
	capSecureConnection | capMultiStatements | capMultiResults | capPSMultiResults |
	capPluginAuth | capConnectAttrs | capPluginAuthLenenc

// upstreamCaps are the negotiated flags passed on to the upstream: they
// change what the server does, not how its packets look.
const upstreamCaps = capFoundRows | capIgnoreSpace | capMultiStatements | capMultiResults |
	capPSMultiResults | capLocalFiles

// Server status flags.
const (
	statusInTrans            = 1 << 0
	statusAutocommit         = 1 << 1
	statusMoreResults        = 1 << 3
	statusCursorExists       = 1 << 6
	statusLastRowSent        = 1 << 7
	statusNoBackslashEscapes = 1 << 9
)

// Authentication plugins.
const (
	pluginNative      = "mysql_native_password"
	pluginCachingSHA2 = "caching_sha2_password"
	pluginClear       = "mysql_clear_password"
)

// Packet headers of the connection phase and of responses.
const (
	hdrOK       = 0x00
	hdrAuthMore = 0x01
	hdrInfile   = 0xfb
	hdrEOF      = 0xfe // also AuthSwitchRequest
	hdrERR      = 0xff

	// caching_sha2_password's AuthMoreData statuses.
	sha2FastAuthOK = 0x03
)

// greeting is the server's initial handshake (Protocol::HandshakeV10).
type greeting struct {
	version   string
	connID    uint32
	challenge []byte // 20 bytes
	caps      uint32
	collation byte
	status    uint16
	plugin    string
}

func (g *greeting) encode() []byte {
	b := make([]byte, 0, 128)
	b = append(b, 10)
	b = append(b, g.version...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint32(b, g.connID)
	b = append(b, g.challenge[:8]...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(g.caps))
	b = append(b, g.collation)
	b = binary.LittleEndian.AppendUint16(b, g.status)
	b = binary.LittleEndian.AppendUint16(b, uint16(g.caps>>16))
	b = append(b, byte(len(g.challenge)+1))
	b = append(b, make([]byte, 10)...)
	b = append(b, g.challenge[8:]...)
	b = append(b, 0)
	b = append(b, g.plugin...)
	return append(b, 0)
}

// parseGreeting reads a server's initial handshake, for the version an
// upstream announces. A server that refuses at once sends an ERR packet
// instead; that is an error here.
func parseGreeting(p []byte) (*greeting, error) {
	if len(p) > 0 && p[0] == hdrERR {
		e := parseErr(p)
		return nil, fmt.Errorf("server refused the connection: %d %s", e.code, e.msg)
	}
	if len(p) == 0 || p[0] != 10 {
		return nil, &frameError{msg: "not a protocol 10 handshake"}
	}
	version, rest, ok := cstring(p[1:])
	if !ok || len(rest) < 4+8+1+2 {
		return nil, &frameError{msg: "truncated handshake"}
	}
	g := &greeting{version: version, connID: binary.LittleEndian.Uint32(rest)}
	g.challenge = append(g.challenge, rest[4:12]...)
	g.caps = uint32(binary.LittleEndian.Uint16(rest[13:]))
	rest = rest[15:]
	if len(rest) >= 1+2+2+1+10 {
		g.collation = rest[0]
		g.status = binary.LittleEndian.Uint16(rest[1:])
		g.caps |= uint32(binary.LittleEndian.Uint16(rest[3:])) << 16
		n := max(13, int(rest[5])-8)
		rest = rest[16:]
		if len(rest) >= n {
			g.challenge = append(g.challenge, rest[:n-1]...)
			g.plugin, _, _ = cstring(rest[n:])
		}
	}
	return g, nil
}

// response is a client's HandshakeResponse41, or its SSLRequest (ssl set,
// nothing after the collation).
type response struct {
	caps      uint32
	maxPacket uint32
	collation byte
	ssl       bool
	user      string
	auth      []byte
	db        string
	plugin    string
	attrs     map[string]string
}

// parseResponse reads a HandshakeResponse41. serverCaps is what the
// greeting offered: flags outside it are ignored, as a server does.
func parseResponse(p []byte, offered uint32) (*response, error) {
	bad := func(what string) error { return &frameError{msg: "malformed handshake response: " + what} }
	if len(p) < 32 {
		return nil, bad(fmt.Sprintf("%d bytes, want at least 32", len(p)))
	}
	r := &response{
		caps:      binary.LittleEndian.Uint32(p),
		maxPacket: binary.LittleEndian.Uint32(p[4:]),
		collation: p[8],
	}
	if r.caps&capProtocol41 == 0 {
		return nil, &frameError{msg: "the client does not speak protocol 4.1 (CLIENT_PROTOCOL_41); airlock needs a MySQL 4.1 or later client"}
	}
	r.caps &= offered | capSSL
	rest := p[32:]
	if len(rest) == 0 {
		r.ssl = r.caps&capSSL != 0
		if !r.ssl {
			return nil, bad("no user name")
		}
		return r, nil
	}
	var ok bool
	if r.user, rest, ok = cstring(rest); !ok {
		return nil, bad("user name not terminated")
	}
	switch {
	case r.caps&capPluginAuthLenenc != 0:
		var n int
		if r.auth, n, ok = lenencBytes(rest); !ok {
			return nil, bad("auth data length")
		}
		rest = rest[n:]
	case r.caps&capSecureConnection != 0:
		if len(rest) < 1 || int(rest[0]) > len(rest)-1 {
			return nil, bad("auth data length")
		}
		r.auth, rest = rest[1:1+int(rest[0])], rest[1+int(rest[0]):]
	default:
		var s string
		if s, rest, ok = cstring(rest); !ok {
			return nil, bad("auth data not terminated")
		}
		r.auth = []byte(s)
	}
	if r.caps&capConnectWithDB != 0 && len(rest) > 0 {
		if r.db, rest, ok = cstring(rest); !ok {
			return nil, bad("database name not terminated")
		}
	}
	if r.caps&capPluginAuth != 0 && len(rest) > 0 {
		if r.plugin, rest, ok = cstring(rest); !ok {
			// Some old clients end the plugin name with the packet.
			r.plugin, rest = string(rest), nil
		}
	}
	if r.caps&capConnectAttrs != 0 && len(rest) > 0 {
		all, _, ok := lenencBytes(rest)
		if !ok {
			return nil, bad("connection attributes length")
		}
		r.attrs = map[string]string{}
		for len(all) > 0 {
			k, n, ok := lenencBytes(all)
			if !ok {
				return nil, bad("connection attribute name")
			}
			all = all[n:]
			v, n, ok := lenencBytes(all)
			if !ok {
				return nil, bad("connection attribute value")
			}
			all = all[n:]
			if len(r.attrs) < 64 {
				r.attrs[string(k)] = string(v)
			}
		}
	}
	return r, nil
}

// authSwitch is an AuthSwitchRequest asking the client to answer challenge
// with plugin.
func authSwitch(plugin string, challenge []byte) []byte {
	b := append([]byte{hdrEOF}, plugin...)
	b = append(b, 0)
	b = append(b, challenge...)
	// MySQL ends the challenge with a NUL the documentation does not
	// mention; libmysqlclient expects it.
	return append(b, 0)
}

// okPacket is an OK packet with no rows and status.
func okPacket(status uint16) []byte {
	return []byte{hdrOK, 0, 0, byte(status), byte(status >> 8), 0, 0}
}

// errPacket is an ERR packet with code, SQLSTATE and message.
func errPacket(code uint16, state, msg string) []byte {
	// A client shows the message on one line and some cut it; keep it
	// whole but free of control characters.
	msg = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, msg)
	b := make([]byte, 0, 9+len(msg))
	b = append(b, hdrERR, byte(code), byte(code>>8), '#')
	b = append(b, state[:5]...)
	return append(b, msg...)
}

// rawErrPacket is an ERR packet whose message is sent as it is, for text
// worded as the server words it.
func rawErrPacket(code uint16, state, msg string) []byte {
	b := make([]byte, 0, 9+len(msg))
	b = append(b, hdrERR, byte(code), byte(code>>8), '#')
	b = append(b, state[:5]...)
	return append(b, msg...)
}

// serverErr is a decoded ERR packet.
type serverErr struct {
	code  uint16
	state string
	msg   string
}

func parseErr(p []byte) serverErr {
	var e serverErr
	if len(p) >= 3 {
		e.code = binary.LittleEndian.Uint16(p[1:])
		p = p[3:]
		if len(p) >= 6 && p[0] == '#' {
			e.state, p = string(p[1:6]), p[6:]
		}
		e.msg = string(p)
	}
	return e
}

// okInfo is what an OK or EOF packet says.
type okInfo struct {
	affected uint64
	insertID uint64
	status   uint16
	warnings uint16
	info     string
}

func parseOK(p []byte) (okInfo, bool) {
	var o okInfo
	if len(p) < 1 {
		return o, false
	}
	rest := p[1:]
	var n int
	var ok bool
	if o.affected, n, _, ok = lenencInt(rest); !ok {
		return o, false
	}
	rest = rest[n:]
	if o.insertID, n, _, ok = lenencInt(rest); !ok {
		return o, false
	}
	rest = rest[n:]
	if len(rest) < 4 {
		return o, false
	}
	o.status = binary.LittleEndian.Uint16(rest)
	o.warnings = binary.LittleEndian.Uint16(rest[2:])
	o.info = string(rest[4:])
	return o, true
}

// parseEOF reads an EOF packet (0xfe, warnings, status).
func parseEOF(p []byte) okInfo {
	var o okInfo
	if len(p) >= 5 {
		o.warnings = binary.LittleEndian.Uint16(p[1:])
		o.status = binary.LittleEndian.Uint16(p[3:])
	}
	return o
}

// isEOF reports whether a result-set packet of payload length n starting
// with b is an EOF packet rather than a row that happens to start with
// 0xfe (a length-encoded value of 2^24 bytes or more).
func isEOF(b byte, n int) bool { return b == hdrEOF && n < 9 }
