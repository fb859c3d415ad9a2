package testenv

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
)

// MySQL capability flags the front reads or changes.
const (
	myCapConnectWithDB = 1 << 3
	myCapProtocol41    = 1 << 9
	myCapSSL           = 1 << 11
	myCapSecureConn    = 1 << 15
	myCapPluginAuth    = 1 << 19
	myCapConnectAttrs  = 1 << 20
	myCapLenencAuth    = 1 << 21
)

// myPacket reads one MySQL packet (the connection phase's are small).
func myPacket(r io.Reader) (seq byte, p []byte, err error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("connection-phase packet of %d bytes", n)
	}
	p = make([]byte, n)
	_, err = io.ReadFull(r, p)
	return h[3], p, err
}

func myWrite(w io.Writer, seq byte, p []byte) error {
	h := []byte{byte(len(p)), byte(len(p) >> 8), byte(len(p) >> 16), seq}
	_, err := w.Write(append(h, p...))
	return err
}

func myErr(code uint16, state, msg string) []byte {
	b := []byte{0xff, byte(code), byte(code >> 8), '#'}
	b = append(b, state...)
	return append(b, msg...)
}

// myGreeting is the part of a server greeting the front needs.
type myGreeting struct {
	raw      []byte
	capsLow  int // offset of the lower capability bytes in raw
	capsHigh int
	salt     []byte
}

func parseMyGreeting(p []byte) (*myGreeting, error) {
	g := &myGreeting{raw: p}
	if len(p) < 1 || p[0] != 10 {
		return nil, errors.New("not a protocol-10 greeting")
	}
	i := bytes.IndexByte(p[1:], 0)
	if i < 0 {
		return nil, errors.New("greeting without a version")
	}
	pos := 1 + i + 1 + 4 // version, connection id
	if len(p) < pos+8+1+2+1+2+2+1+10 {
		return nil, errors.New("short greeting")
	}
	g.salt = append(g.salt, p[pos:pos+8]...)
	pos += 9
	g.capsLow = pos
	pos += 2 + 1 + 2
	g.capsHigh = pos
	pos += 2
	authLen := int(p[pos])
	pos += 1 + 10
	n := max(13, authLen-8)
	if len(p) < pos+n {
		return nil, errors.New("short greeting scramble")
	}
	g.salt = append(g.salt, p[pos:pos+n-1]...) // the scramble's last byte is a NUL
	return g, nil
}

func (g *myGreeting) caps() uint32 {
	return uint32(binary.LittleEndian.Uint16(g.raw[g.capsLow:])) | uint32(binary.LittleEndian.Uint16(g.raw[g.capsHigh:]))<<16
}

// myResponse is a parsed HandshakeResponse41.
type myResponse struct {
	caps     uint32
	head     []byte // capabilities, max packet, charset, filler: 32 bytes
	user, db string
	attrs    []byte // the length-encoded attribute block, as sent
}

func parseMyResponse(p []byte) (*myResponse, error) {
	if len(p) < 32 {
		return nil, errors.New("short handshake response")
	}
	r := &myResponse{caps: binary.LittleEndian.Uint32(p), head: p[:32]}
	if r.caps&myCapProtocol41 == 0 {
		return nil, errors.New("client does not speak protocol 4.1")
	}
	rest := p[32:]
	cut := func() (string, error) {
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return "", errors.New("unterminated string in handshake response")
		}
		s := string(rest[:i])
		rest = rest[i+1:]
		return s, nil
	}
	var err error
	if r.user, err = cut(); err != nil {
		return nil, err
	}
	switch {
	case r.caps&myCapLenencAuth != 0:
		n, _, used := gomysql.LengthEncodedInt(rest)
		if used == 0 || len(rest) < used+int(n) {
			return nil, errors.New("bad auth response length")
		}
		rest = rest[used+int(n):]
	case r.caps&myCapSecureConn != 0:
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return nil, errors.New("bad auth response length")
		}
		rest = rest[1+int(rest[0]):]
	default:
		if _, err := cut(); err != nil {
			return nil, err
		}
	}
	if r.caps&myCapConnectWithDB != 0 {
		if r.db, err = cut(); err != nil {
			return nil, err
		}
	}
	if r.caps&myCapPluginAuth != 0 {
		if _, err := cut(); err != nil {
			return nil, err
		}
	}
	if r.caps&myCapConnectAttrs != 0 {
		r.attrs = rest
	}
	return r, nil
}

// StartRDSMySQL starts an RDS front for my. iamUsers are the accounts
// created IDENTIFIED WITH AWSAuthenticationPlugin; the front logs in to my
// as my.User. Like RDS it greets with the real server's greeting (adding
// TLS), then switches an IAM login to mysql_clear_password.
func (a *AWS) StartRDSMySQL(t testing.TB, my *MariaDB, iamUsers ...string) *RDSFront {
	t.Helper()
	tlsCfg := a.serverTLS()
	return a.startFront(t, iamUsers, func(f *RDSFront, c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		up, err := net.DialTimeout("tcp", my.Addr(), 5*time.Second)
		if err != nil {
			return
		}
		defer up.Close()
		_ = up.SetDeadline(time.Now().Add(30 * time.Second))
		_, gp, err := myPacket(up)
		if err != nil {
			return
		}
		g, err := parseMyGreeting(gp)
		if err != nil {
			return
		}
		serverCaps := g.caps()
		toClient := append([]byte(nil), gp...)
		binary.LittleEndian.PutUint16(toClient[g.capsLow:], uint16(serverCaps|myCapSSL))
		if myWrite(c, 0, toClient) != nil {
			return
		}
		var conn net.Conn = c
		seq, p, err := myPacket(conn)
		if err != nil {
			return
		}
		if len(p) == 32 && binary.LittleEndian.Uint32(p)&myCapSSL != 0 {
			tc := tls.Server(c, tlsCfg)
			if tc.Handshake() != nil {
				return
			}
			conn = tc
			if seq, p, err = myPacket(conn); err != nil {
				return
			}
		}
		resp, err := parseMyResponse(p)
		if err != nil {
			_ = myWrite(conn, seq+1, myErr(1043, "08S01", "Bad handshake"))
			return
		}
		if _, isTLS := conn.(*tls.Conn); !isTLS {
			f.record(resp.user, "no TLS", "")
			_ = myWrite(conn, seq+1, myErr(3159, "HY000", "Connections using insecure transport are prohibited while --require_secure_transport=ON."))
			return
		}
		// An IAM user's plugin needs the password in clear.
		if myWrite(conn, seq+1, []byte("\xfemysql_clear_password\x00")) != nil {
			return
		}
		seq, p, err = myPacket(conn)
		if err != nil {
			return
		}
		token := string(bytes.TrimRight(p, "\x00"))
		denied := myErr(1045, "28000", fmt.Sprintf("Access denied for user '%s'@'127.0.0.1' (using password: YES)", resp.user))
		if why := f.checkToken(token, resp.user); why != "" {
			f.record(resp.user, why, token)
			_ = myWrite(conn, seq+1, denied)
			return
		}
		f.record(resp.user, "", token)
		clientSeq := seq + 1

		// Log in upstream with the client's capabilities (less TLS) and
		// the real account.
		caps := resp.caps &^ myCapSSL
		caps |= myCapPluginAuth | myCapSecureConn
		caps &^= myCapLenencAuth
		out := append([]byte(nil), resp.head...)
		binary.LittleEndian.PutUint32(out, caps)
		out = append(append(out, my.User...), 0)
		scramble := gomysql.CalcNativePassword(g.salt[:20], []byte(my.Password))
		out = append(append(out, byte(len(scramble))), scramble...)
		if caps&myCapConnectWithDB != 0 {
			out = append(append(out, resp.db...), 0)
		}
		out = append(append(out, "mysql_native_password"...), 0)
		if caps&myCapConnectAttrs != 0 {
			out = append(out, resp.attrs...)
		}
		if myWrite(up, 1, out) != nil {
			return
		}
		useq, reply, err := myPacket(up)
		if err != nil {
			return
		}
		if len(reply) > 0 && reply[0] == 0xfe {
			// An auth switch: only mysql_native_password is expected here.
			i := bytes.IndexByte(reply[1:], 0)
			if i < 0 || string(reply[1:1+i]) != "mysql_native_password" || len(reply) < 1+i+1+20 {
				_ = myWrite(conn, clientSeq, myErr(1105, "HY000", "rds front: unexpected upstream auth switch"))
				return
			}
			salt := reply[1+i+1 : 1+i+1+20]
			if myWrite(up, useq+1, gomysql.CalcNativePassword(salt, []byte(my.Password))) != nil {
				return
			}
			if _, reply, err = myPacket(up); err != nil {
				return
			}
		}
		if myWrite(conn, clientSeq, reply) != nil || len(reply) == 0 || reply[0] != 0 {
			return
		}
		_ = c.SetDeadline(time.Time{})
		_ = up.SetDeadline(time.Time{})
		relay(conn, up)
	})
}
