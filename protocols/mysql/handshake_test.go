package mysql

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/airlockhq/airlock/credential"
)

// handshakeResponse builds a HandshakeResponse41 as clients send it.
func handshakeResponse(caps uint32, user string, auth []byte, db, plugin string, attrs map[string]string) []byte {
	b := binary.LittleEndian.AppendUint32(nil, caps)
	b = binary.LittleEndian.AppendUint32(b, 1<<24)
	b = append(b, 45)
	b = append(b, make([]byte, 23)...)
	if user == "" && auth == nil && db == "" && plugin == "" {
		return b // an SSLRequest
	}
	b = append(append(b, user...), 0)
	switch {
	case caps&capPluginAuthLenenc != 0:
		b = appendLenencBytes(b, auth)
	default:
		b = append(append(b, byte(len(auth))), auth...)
	}
	if caps&capConnectWithDB != 0 {
		b = append(append(b, db...), 0)
	}
	if caps&capPluginAuth != 0 {
		b = append(append(b, plugin...), 0)
	}
	if caps&capConnectAttrs != 0 {
		var a []byte
		for k, v := range attrs {
			a = appendLenencBytes(a, []byte(k))
			a = appendLenencBytes(a, []byte(v))
		}
		b = appendLenencBytes(b, a)
	}
	return b
}

const clientCaps = capProtocol41 | capSecureConnection | capPluginAuth | capPluginAuthLenenc | capConnectWithDB |
	capConnectAttrs | capMultiStatements | capMultiResults | capLongPassword | capTransactions

func TestGreetingRoundTrip(t *testing.T) {
	g := &greeting{version: "5.5.5-10.11.19-MariaDB-0+deb12u1", connID: 77, challenge: newChallenge(),
		caps: serverCaps | capSSL, collation: 45, status: statusAutocommit, plugin: pluginCachingSHA2}
	got, err := parseGreeting(g.encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.version != g.version || got.connID != 77 || got.caps != g.caps || got.collation != 45 || got.status != statusAutocommit {
		t.Errorf("parsed %+v from %+v", got, g)
	}
	if !bytes.Equal(got.challenge, g.challenge) || got.plugin != pluginCachingSHA2 {
		t.Errorf("challenge %q and plugin %q, want %q and %s", got.challenge, got.plugin, g.challenge, pluginCachingSHA2)
	}
	for _, c := range g.challenge {
		if c == 0 || c > 0x7e {
			t.Fatalf("challenge byte 0x%02x is not printable", c)
		}
	}
	if _, err := parseGreeting(errPacket(1129, "HY000", "Host blocked")); err == nil || !strings.Contains(err.Error(), "Host blocked") {
		t.Errorf("greeting that is an ERR: %v", err)
	}
	if _, err := parseGreeting([]byte{10, 'x'}); err == nil {
		t.Error("a truncated greeting parsed")
	}
}

func TestParseResponse(t *testing.T) {
	auth := bytes.Repeat([]byte{7}, 32)
	for _, c := range []struct {
		name  string
		in    []byte
		check func(*testing.T, *response, error)
	}{
		{"full", handshakeResponse(clientCaps, "agent-1", auth, "shop-mysql", pluginCachingSHA2, map[string]string{"_client_name": "libmariadb"}),
			func(t *testing.T, r *response, err error) {
				if err != nil || r.user != "agent-1" || r.db != "shop-mysql" || r.plugin != pluginCachingSHA2 || !bytes.Equal(r.auth, auth) || r.attrs["_client_name"] != "libmariadb" {
					t.Errorf("got %+v, %v", r, err)
				}
			}},
		{"one-byte auth length", handshakeResponse(clientCaps&^capPluginAuthLenenc, "agent-1", auth[:20], "db", pluginNative, nil),
			func(t *testing.T, r *response, err error) {
				if err != nil || len(r.auth) != 20 || r.db != "db" || r.plugin != pluginNative {
					t.Errorf("got %+v, %v", r, err)
				}
			}},
		{"ssl request", handshakeResponse(clientCaps|capSSL, "", nil, "", "", nil),
			func(t *testing.T, r *response, err error) {
				if err != nil || !r.ssl {
					t.Errorf("got %+v, %v", r, err)
				}
			}},
		{"flags the server did not offer are dropped", handshakeResponse(clientCaps|capDeprecateEOF|capCompress|capQueryAttributes, "a", auth, "db", pluginNative, nil),
			func(t *testing.T, r *response, err error) {
				if err != nil || r.caps&(capDeprecateEOF|capCompress|capQueryAttributes) != 0 {
					t.Errorf("got caps %#x, %v", r.caps, err)
				}
			}},
		{"pre-4.1 client", handshakeResponse(capSecureConnection, "a", auth, "", "", nil),
			func(t *testing.T, r *response, err error) {
				if err == nil || !strings.Contains(err.Error(), "4.1") {
					t.Errorf("got %v", err)
				}
			}},
		{"short", []byte{1, 2, 3}, func(t *testing.T, r *response, err error) {
			if err == nil {
				t.Error("parsed")
			}
		}},
		{"auth length past the end", append(binary.LittleEndian.AppendUint32(make([]byte, 0), clientCaps&^capPluginAuthLenenc), append(make([]byte, 28), 'a', 0, 200, 1)...),
			func(t *testing.T, r *response, err error) {
				if err == nil {
					t.Errorf("parsed %+v", r)
				}
			}},
		{"unterminated user", append(handshakeResponse(clientCaps, "", nil, "", "", nil), 'a', 'b'),
			func(t *testing.T, r *response, err error) {
				if err == nil {
					t.Errorf("parsed %+v", r)
				}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := parseResponse(c.in, serverCaps|capSSL)
			c.check(t, r, err)
		})
	}
}

// TestMatcher checks the gateway's verifiers against go-mysql's client
// side of each plugin, which computes the answer from the token itself.
func TestMatcher(t *testing.T) {
	token := credential.NewToken()
	v := credential.NewVerifier("agent-1", token)
	other := credential.NewVerifier("agent-1", credential.NewToken())
	challenge := newChallenge()
	for _, c := range []struct {
		plugin string
		answer []byte
	}{
		{pluginNative, gm.CalcNativePassword(challenge, []byte(token))},
		{pluginCachingSHA2, gm.CalcCachingSha2Password(challenge, []byte(token))},
		{pluginClear, append([]byte(token), 0)},
	} {
		m := matcher(c.plugin, challenge, c.answer)
		if m == nil || !m(v) {
			t.Errorf("%s: the right token does not match", c.plugin)
		}
		if m != nil && m(other) {
			t.Errorf("%s: another grant's verifier matches", c.plugin)
		}
		wrong := matcher(c.plugin, newChallenge(), c.answer)
		if c.plugin != pluginClear && wrong != nil && wrong(v) {
			t.Errorf("%s: an answer to another challenge matches", c.plugin)
		}
	}
	if matcher(pluginNative, challenge, make([]byte, 19)) != nil || matcher(pluginCachingSHA2, challenge, make([]byte, 20)) != nil {
		t.Error("answers of the wrong length are not refused")
	}
	// A verifier from before MySQL support has no MySQL material.
	old := *v
	old.MySQLNative, old.MySQLSHA2 = nil, nil
	if matcher(pluginNative, challenge, gm.CalcNativePassword(challenge, []byte(token)))(&old) {
		t.Error("an empty verifier matched")
	}
}

// pipeClient runs p.handshake against a client that sends in and then
// reads whatever comes back.
func runHandshake(t testing.TB, p *Protocol, in []byte) (*handshakeState, error, []byte) {
	server, client := net.Pipe()
	defer server.Close()
	go func() {
		_, _ = client.Write(in)
		// Half-close is not possible on a pipe; closing ends the input.
		client.Close()
	}()
	_ = server.SetDeadline(time.Now().Add(5 * time.Second))
	var out bytes.Buffer
	cl := newClient(server)
	cl.w = bufio.NewWriter(&out)
	hs, err := p.handshake(context.Background(), cl)
	return hs, err, out.Bytes()
}

func packet(seq byte, p []byte) []byte {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	_, _ = writePacket(w, seq, p)
	_ = w.Flush()
	return b.Bytes()
}

func TestHandshake(t *testing.T) {
	p := &Protocol{AllowPlaintext: true}
	auth := bytes.Repeat([]byte{7}, 32)
	hs, err, out := runHandshake(t, p, packet(1, handshakeResponse(clientCaps, "agent-1", auth, "shop-mysql", pluginCachingSHA2, nil)))
	if err != nil || hs.resp.user != "agent-1" || hs.resp.db != "shop-mysql" {
		t.Fatalf("handshake: %v, %+v", err, hs)
	}
	h, _ := readHeader(bytes.NewReader(out))
	g, err := parseGreeting(out[4 : 4+h.n])
	if err != nil || g.version != fallbackVersion || g.plugin != pluginCachingSHA2 || g.caps&capSSL != 0 || g.caps&capDeprecateEOF != 0 {
		t.Errorf("greeting %+v, %v", g, err)
	}
	if !bytes.Equal(hs.challenge, g.challenge) {
		t.Error("the greeting does not carry the session's challenge")
	}
	if g.connID < 1<<30 {
		t.Errorf("greeting connection id %d is below 2^30", g.connID)
	}
	// Without a database the token's grant names the resource, at
	// authentication.
	if hs, err, _ := runHandshake(t, p, packet(1, handshakeResponse(clientCaps, "agent-1", auth, "", pluginNative, nil))); err != nil || hs.resp.db != "" {
		t.Errorf("handshake without a database: %v, %+v", err, hs)
	}

	for _, c := range []struct {
		name string
		p    *Protocol
		in   []byte
		want string
	}{
		{"plaintext refused", &Protocol{}, packet(1, handshakeResponse(clientCaps, "agent-1", auth, "db", pluginNative, nil)), "requires TLS"},
		{"no user", p, packet(1, handshakeResponse(clientCaps, "", auth, "db", pluginNative, nil)), "no user name"},
		{"ssl without TLS configured", p, packet(1, handshakeResponse(clientCaps|capSSL, "", nil, "", "", nil)), "TLS is not configured"},
		{"wrong sequence", p, packet(0, handshakeResponse(clientCaps, "agent-1", auth, "db", pluginNative, nil)), "sequence id 0, want 1"},
		{"oversized", p, append([]byte{0xff, 0xff, 0xff, 1}, bytes.Repeat([]byte{1}, 70000)...), "larger than the gateway reads whole"},
		{"truncated", p, []byte{100, 0, 0, 1, 1, 2, 3}, "truncated"},
		{"garbage", p, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err, _ := runHandshake(t, c.p, c.in)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want %q", err, c.want)
			}
			var fe *frameError
			var he *handshakeError
			if c.want != "" && !errors.As(err, &fe) && !errors.As(err, &he) {
				t.Errorf("error %T is neither a frame nor a handshake error", err)
			}
		})
	}
}

func TestReadPayload(t *testing.T) {
	big := bytes.Repeat([]byte("x"), maxPayload+10)
	in := packet(3, big)
	r := bufio.NewReader(bytes.NewReader(in))
	h, err := readHeader(r)
	if err != nil || h.n != maxPayload || h.seq != 3 {
		t.Fatalf("first header %+v, %v", h, err)
	}
	p, last, err := readPayload(r, h, nil, 32<<20, "test")
	if err != nil || !bytes.Equal(p, big) || last != 4 {
		t.Fatalf("multi-packet payload: %d bytes, last seq %d, %v", len(p), last, err)
	}
	// A payload of exactly maxPayload bytes ends with an empty packet.
	in = packet(0, big[:maxPayload])
	if len(in) != 2*headerSize+maxPayload {
		t.Fatalf("exact-size payload written as %d bytes", len(in))
	}
	// Over the limit: an error, not an allocation of the claimed size.
	r = bufio.NewReader(bytes.NewReader(packet(0, big)))
	h, _ = readHeader(r)
	if _, _, err := readPayload(r, h, nil, 1<<20, "test"); err == nil {
		t.Fatal("read past the limit")
	}
	// A continuation with the wrong sequence id.
	bad := append(packet(0, big[:maxPayload])[:headerSize+maxPayload], 0, 0, 0, 7)
	r = bufio.NewReader(bytes.NewReader(bad))
	h, _ = readHeader(r)
	if _, _, err := readPayload(r, h, nil, 32<<20, "test"); err == nil || !strings.Contains(err.Error(), "sequence id 7") {
		t.Fatalf("bad continuation: %v", err)
	}
	// A claimed length with nothing behind it.
	r = bufio.NewReader(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0}))
	h, _ = readHeader(r)
	if _, _, err := readPayload(r, h, nil, 32<<20, "test"); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
}

func TestLenenc(t *testing.T) {
	for _, v := range []uint64{0, 250, 251, 65535, 65536, 1<<24 - 1, 1 << 24, 1<<64 - 1} {
		b := appendLenencInt(nil, v)
		got, n, null, ok := lenencInt(b)
		if !ok || null || got != v || n != len(b) {
			t.Errorf("%d: encoded %x, read %d (%d bytes, ok %v)", v, b, got, n, ok)
		}
		if _, _, _, ok := lenencInt(b[:len(b)-1]); ok && len(b) > 1 {
			t.Errorf("%d: a truncated integer read", v)
		}
	}
	if _, _, null, ok := lenencInt([]byte{0xfb}); !ok || !null {
		t.Error("0xfb is not NULL")
	}
	if _, _, ok := lenencBytes([]byte{5, 'a'}); ok {
		t.Error("a string longer than its packet read")
	}
}

func TestErrAndOK(t *testing.T) {
	e := parseErr(errPacket(1142, "42000", "airlock: DELETE requires\nwrite access"))
	if e.code != 1142 || e.state != "42000" || e.msg != "airlock: DELETE requires write access" {
		t.Errorf("ERR round trip: %+v", e)
	}
	o, ok := parseOK(okPacket(statusAutocommit | statusInTrans))
	if !ok || o.status != statusAutocommit|statusInTrans || o.affected != 0 {
		t.Errorf("OK round trip: %+v %v", o, ok)
	}
	if !isEOF(0xfe, 5) || isEOF(0xfe, 9) || isEOF(0x00, 5) {
		t.Error("isEOF")
	}
}
