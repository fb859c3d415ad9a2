package mysql

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"testing"
)

// FuzzPackets runs arbitrary bytes through the packet reader: no panic,
// and no payload larger than what was actually sent.
func FuzzPackets(f *testing.F) {
	f.Add(packet(0, append([]byte{comQuery}, "select 1"...)))
	f.Add([]byte{0xff, 0xff, 0xff, 0, 1, 2, 3})
	f.Add(append(packet(0, bytes.Repeat([]byte{1}, 10)), 0, 0, 0, 9))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for {
			h, err := readHeader(r)
			if err != nil {
				return
			}
			p, _, err := readPayload(r, h, nil, 1<<20, "packet")
			if err != nil {
				return
			}
			if len(p) > len(in) {
				t.Fatalf("read a %d-byte payload out of %d bytes", len(p), len(in))
			}
		}
	})
}

// FuzzHandshake feeds arbitrary bytes to the connection phase: it must
// never panic and never hang once the client stops sending, and it ends
// in a client that named a user and a database, or an error.
func FuzzHandshake(f *testing.F) {
	f.Add(packet(1, handshakeResponse(clientCaps, "agent-1", bytes.Repeat([]byte{7}, 32), "shop-mysql", pluginCachingSHA2, map[string]string{"k": "v"})))
	f.Add(packet(1, handshakeResponse(clientCaps&^capPluginAuthLenenc, "agent-1", bytes.Repeat([]byte{7}, 20), "db", pluginNative, nil)))
	f.Add(packet(1, handshakeResponse(clientCaps|capSSL, "", nil, "", "", nil)))
	f.Add([]byte{0xff, 0xff, 0xff, 1})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	p := &Protocol{AllowPlaintext: true}
	f.Fuzz(func(t *testing.T, in []byte) {
		hs, err, _ := runHandshake(t, p, in)
		if err == nil && (hs.resp == nil || hs.resp.user == "" || hs.resp.db == "") {
			t.Fatalf("handshake succeeded without a user and database: %+v", hs.resp)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("handshake hung: %v", err)
		}
	})
}

// FuzzExecute decodes arbitrary COM_STMT_EXECUTE payloads for statements
// of 0 to 20 parameters: no panic, no value longer than the packet.
func FuzzExecute(f *testing.F) {
	f.Add(uint8(2), executePacket(1, 2, nil, []byte{0x08, 0, 0xfd, 0}, append(make([]byte, 8), 1, 'x')))
	f.Add(uint8(1), executePacket(1, 1, []int{0}, []byte{0x0c, 0}, nil))
	f.Add(uint8(1), executePacket(1, 1, nil, []byte{0x0b, 0}, []byte{12, 1, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0}))
	f.Fuzz(func(t *testing.T, n uint8, in []byte) {
		st := &stmt{params: int(n % 21)}
		vals, err := parseExecute(in, st)
		if err != nil {
			return
		}
		for _, v := range vals {
			if len(v.value) > len(in)+64 {
				t.Fatalf("a %d-byte value out of %d bytes", len(v.value), len(in))
			}
		}
	})
}
