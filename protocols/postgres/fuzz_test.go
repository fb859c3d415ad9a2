package postgres

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockhq/airlock/authz"
	pgauthz "github.com/airlockhq/airlock/authz/postgres"
)

func startupPacket(code uint32, rest ...byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(rest)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, rest...)
}

// FuzzStartup feeds arbitrary bytes to the startup handshake: it must never
// panic, never hang once the client stops sending, and end in a client, a
// cancel packet or an error.
func FuzzStartup(f *testing.F) {
	sm, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "agent-1", "database": "demo-pg"}}).Encode(nil)
	f.Add(sm)
	f.Add(startupPacket(codeSSLRequest))
	f.Add(startupPacket(codeGSSENCRequest))
	f.Add(append(startupPacket(codeCancelRequest, 0, 0, 0, 1), 1, 2, 3, 4))
	f.Add([]byte{0, 0, 0, 8, 0, 4, 0, 0})
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 3, 1, 0, 5})
	p := &Protocol{AllowPlaintext: true}
	f.Fuzz(func(t *testing.T, in []byte) {
		server, client := net.Pipe()
		defer server.Close()
		go func() {
			_, _ = client.Write(in)
			client.Close()
		}()
		go io.Copy(io.Discard, client) //nolint:errcheck // drain replies
		_ = server.SetDeadline(time.Now().Add(5 * time.Second))
		cl, err := p.startup(server)
		if err == nil && (cl == nil || cl.params["user"] == "") {
			t.Fatalf("startup succeeded without a user: %+v", cl)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("startup hung: %v", err)
		}
	})
}

// FuzzClientFrames runs arbitrary bytes through the frame reader and the
// decoders of the messages the gateway reads: no panic, and no allocation
// beyond what was actually sent.
func FuzzClientFrames(f *testing.F) {
	q, _ := (&pgproto3.Query{String: "select 1"}).Encode(nil)
	pa, _ := (&pgproto3.Parse{Name: "s", Query: "select $1"}).Encode(nil)
	bi, _ := (&pgproto3.Bind{DestinationPortal: "", PreparedStatement: "s", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 7}}}).Encode(nil)
	f.Add(append(append(q, pa...), bi...))
	f.Add([]byte{'Q', 0x7f, 0xff, 0xff, 0xff})
	f.Add([]byte{'B', 0, 0, 0, 6, 0, 0})
	nul, _ := (&pgproto3.Bind{DestinationPortal: "c1", PreparedStatement: "s", ParameterFormatCodes: []int16{0, 1}, Parameters: [][]byte{nil, []byte("x"), {}}, ResultFormatCodes: []int16{1}}).Encode(nil)
	f.Add(nul)
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		var buf []byte
		var bind bindMsg // reused from Bind to Bind, as a session does
		for {
			typ, n, err := readHeader(r)
			if err != nil {
				return
			}
			if n > len(in) {
				// The body cannot be there; readBody must fail without
				// allocating n bytes.
				if _, err := readBody(r, nil, n, typ); err == nil {
					t.Fatalf("read a %d-byte body out of %d bytes of input", n, len(in))
				}
				return
			}
			if buf, err = readBody(r, buf, n, typ); err != nil {
				return
			}
			switch typ {
			case 'Q':
				_, _, _ = cstring(buf)
			case 'P':
				_ = (&pgproto3.Parse{}).Decode(buf)
			case 'B':
				checkBindDecode(t, &bind, buf)
				bind.release()
			case 'E':
				_, _, _ = cstring(buf)
			}
		}
	})
}

// checkBindDecode decodes body as a Bind with the gateway's in-place
// decoder, into got (which may hold an earlier Bind), and with pgproto3's:
// both refuse it or both read the same names, parameters (NULL as NULL)
// and formats.
func checkBindDecode(t *testing.T, got *bindMsg, body []byte) {
	var want pgproto3.Bind
	werr := want.Decode(body)
	gerr := got.decode(body)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("Bind %x: pgproto3 says %v, the gateway %v", body, werr, gerr)
	}
	if werr != nil {
		return
	}
	if string(got.portal) != want.DestinationPortal || string(got.stmt) != want.PreparedStatement || len(got.params) != len(want.Parameters) {
		t.Fatalf("Bind %x: read %q %q with %d parameters, want %q %q with %d", body, got.portal, got.stmt, len(got.params), want.DestinationPortal, want.PreparedStatement, len(want.Parameters))
	}
	for i, p := range want.Parameters {
		binary := false
		switch len(want.ParameterFormatCodes) {
		case 0:
		case 1:
			binary = want.ParameterFormatCodes[0] == 1
		default:
			binary = i < len(want.ParameterFormatCodes) && want.ParameterFormatCodes[i] == 1
		}
		if (p == nil) != (got.params[i] == nil) || !bytes.Equal(p, got.params[i]) || got.binary(i) != binary {
			t.Fatalf("Bind %x: parameter %d read as %x (binary %v), want %x (binary %v)", body, i, got.params[i], got.binary(i), p, binary)
		}
	}
}

// FuzzSCRAM: the SCRAM parser never panics on client messages.
func FuzzSCRAM(f *testing.F) {
	f.Add("n,,n=,r=abc", "c=biws,r=abcXYZ,p=AAAA")
	f.Add("y,,n=,r=", "p=")
	f.Add("p=tls-server-end-point,,n=,r=x", "")
	f.Fuzz(func(t *testing.T, first, final string) {
		s := &scramServer{salt: []byte("salt")}
		if _, err := s.first(first); err != nil {
			return
		}
		_, _ = s.final(final)
	})
}

// TestStartupRefusals: what the gateway refuses before authentication.
func TestStartupRefusals(t *testing.T) {
	sm := func(params map[string]string) []byte {
		b, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}).Encode(nil)
		return b
	}
	cases := []struct {
		name  string
		p     *Protocol
		in    []byte
		want  string
		code  string
		ok    bool
		reply []byte
	}{
		{name: "plaintext refused", p: &Protocol{}, in: sm(map[string]string{"user": "a", "database": "r"}), want: "requires TLS", code: stateInvalidAuthSpec},
		{name: "replication refused", p: &Protocol{AllowPlaintext: true}, in: sm(map[string]string{"user": "a", "replication": "database"}), want: "replication", code: stateInsufficientPrivilege},
		{name: "replication=false fine", p: &Protocol{AllowPlaintext: true}, in: sm(map[string]string{"user": "a", "replication": "false"}), ok: true},
		// Settings are decided under the grant, after authentication;
		// options must read as PostgreSQL reads them.
		{name: "settings decided later", p: &Protocol{AllowPlaintext: true}, in: sm(map[string]string{"user": "a", "options": "-c role=postgres", "search_path": "evil", "client_encoding": "SJIS"}), ok: true},
		{name: "unsupported switch", p: &Protocol{AllowPlaintext: true}, in: sm(map[string]string{"user": "a", "options": "-B 100"}), want: "the startup option -B is not supported", code: stateFeatureNotSupported},
		{name: "switch without value", p: &Protocol{AllowPlaintext: true}, in: sm(map[string]string{"user": "a", "options": "-c statement_timeout"}), want: "-c statement_timeout requires a value", code: stateSyntaxError},
		{name: "stray word in options", p: &Protocol{AllowPlaintext: true}, in: sm(map[string]string{"user": "a", "options": "-c a=b foo"}), want: "invalid command-line argument for server process: foo", code: stateSyntaxError},
		{name: "no user", p: &Protocol{AllowPlaintext: true}, in: sm(map[string]string{"database": "r"}), want: "no user", code: stateInvalidAuthSpec},
		{name: "SSLRequest without TLS configured", p: &Protocol{AllowPlaintext: true}, in: append(startupPacket(codeSSLRequest), sm(map[string]string{"user": "a"})...), ok: true, reply: []byte("N")},
		{name: "GSSENCRequest answered N", p: &Protocol{AllowPlaintext: true}, in: append(startupPacket(codeGSSENCRequest), sm(map[string]string{"user": "a"})...), ok: true, reply: []byte("N")},
		{name: "protocol 4 refused", p: &Protocol{AllowPlaintext: true}, in: startupPacket(4 << 16), want: "unsupported frontend protocol 4.0: server supports 3.0 to 3.0", code: stateFeatureNotSupported},
		{name: "SSLRequest with trailing plaintext", p: &Protocol{TLS: &tls.Config{}}, in: append(startupPacket(codeSSLRequest), 'x'), want: "unencrypted data after SSLRequest", code: stateProtocolViolation},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			server, client := net.Pipe()
			defer server.Close()
			go func() { _, _ = client.Write(c.in) }()
			replies := make(chan []byte, 1)
			go func() { b, _ := io.ReadAll(client); replies <- b }()
			_ = server.SetDeadline(time.Now().Add(5 * time.Second))
			_, err := c.p.startup(server)
			if c.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
			} else {
				var fe *fatal
				if !errors.As(err, &fe) || fe.code != c.code || !bytes.Contains([]byte(fe.msg), []byte(c.want)) {
					t.Fatalf("got %v, want %s %q", err, c.code, c.want)
				}
			}
			server.Close()
			client.Close()
			if got := <-replies; c.reply != nil && !bytes.HasPrefix(got, c.reply) {
				t.Errorf("replied %q, want %q", got, c.reply)
			}
		})
	}
}

// TestProtocolVersionNegotiation: a 3.2 client or _pq_ options get a
// NegotiateProtocolVersion for 3.0 naming the options not understood.
func TestProtocolVersionNegotiation(t *testing.T) {
	in, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: map[string]string{"user": "a", "_pq_.foo": "1"}}).Encode(nil)
	server, client := net.Pipe()
	defer client.Close()
	go func() { _, _ = client.Write(in) }()
	got := make(chan []byte, 1)
	go func() {
		r := bufio.NewReader(client)
		typ, n, err := readHeader(r)
		if err != nil || typ != 'v' {
			got <- nil
			return
		}
		b, _ := readBody(r, nil, n, typ)
		got <- b
	}()
	_ = server.SetDeadline(time.Now().Add(5 * time.Second))
	p := &Protocol{AllowPlaintext: true}
	cl, err := p.startup(server)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.w.Flush(); err != nil {
		t.Fatal(err)
	}
	var npv pgproto3.NegotiateProtocolVersion
	b := <-got
	if b == nil || npv.Decode(b) != nil || npv.NewestMinorProtocol != 0 || len(npv.UnrecognizedOptions) != 1 || npv.UnrecognizedOptions[0] != "_pq_.foo" {
		t.Fatalf("NegotiateProtocolVersion: %q %+v", b, npv)
	}
}

// TestParseOptions: the options startup parameter read as PostgreSQL
// reads it.
func TestParseOptions(t *testing.T) {
	for _, c := range []struct {
		in, want string // want: name=value pairs joined by "|"
	}{
		{"", ""},
		{"  ", ""},
		{"-c statement_timeout=5s", "statement_timeout=5s"},
		{"-cstatement_timeout=5s   -c lock_timeout=1s", "statement_timeout=5s|lock_timeout=1s"},
		{"--lock-timeout=2s --search_path=a,b", "lock_timeout=2s|search_path=a,b"},
		{`-c application_name=two\ words`, "application_name=two words"},
		{`-c a=back\\slash\ end`, `a=back\slash end`},
		{"-c a=", "a="},
		{"-c a=b=c", "a=b=c"},
		{"\t-c\na=1\t", "a=1"},
		{"-c a=1 --", "a=1"},
	} {
		got, err := parseOptions(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		var parts []string
		for _, p := range got {
			parts = append(parts, p.Name+"="+p.Value)
		}
		if s := strings.Join(parts, "|"); s != c.want {
			t.Errorf("%q: %q, want %q", c.in, s, c.want)
		}
	}
	for _, in := range []string{"-c", "-c a", "--a", "a=1", "-e", "-c a=1 -- b=2", "-", "-c =1", "--=1"} {
		if _, err := parseOptions(in); err == nil {
			t.Errorf("%q: read without error", in)
		}
	}
	// The other parameters follow options and win over them.
	set, err := settings(map[string]string{"user": "u", "database": "d", "options": "-c TimeZone=UTC", "TimeZone": "Asia/Tokyo", "application_name": "x", "_pq_.ext": "1", "replication": "false"})
	if err != nil || len(set) != 3 || set[0] != (pgauthz.StartupParam{Name: "TimeZone", Value: "UTC"}) ||
		set[1].Name != "TimeZone" || set[2].Name != "application_name" {
		t.Errorf("settings: %+v, %v", set, err)
	}
	if rp := upstreamParams(&authz.Grant{Access: authz.AccessRead}, set); rp["timezone"] != "Asia/Tokyo" || rp["default_transaction_read_only"] != "on" || rp["standard_conforming_strings"] != "on" {
		t.Errorf("upstream parameters: %v", rp)
	}
}

// FuzzParseOptions: reading the options startup parameter never panics,
// and every setting it reads has a name.
func FuzzParseOptions(f *testing.F) {
	f.Add(`-c statement_timeout=5s --lock-timeout=1s -c application_name=a\ b`)
	f.Add(`-c`)
	f.Add(`-- x \\ \`)
	f.Fuzz(func(t *testing.T, opts string) {
		set, err := parseOptions(opts)
		if err != nil {
			return
		}
		for _, p := range set {
			if p.Name == "" {
				t.Errorf("%q: a setting without a name: %+v", opts, set)
			}
		}
	})
}
