package ssh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// sftpFrame builds a packet: length, type, then fields (uint32, uint64,
// string or []byte as an SFTP string).
func sftpFrame(typ byte, fields ...any) []byte {
	b := []byte{0, 0, 0, 0, typ}
	for _, f := range fields {
		switch v := f.(type) {
		case uint32:
			b = binary.BigEndian.AppendUint32(b, v)
		case int:
			b = binary.BigEndian.AppendUint32(b, uint32(v))
		case uint64:
			b = binary.BigEndian.AppendUint64(b, v)
		case string:
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		case []byte:
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		}
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

func TestSSHSFTPParseRequest(t *testing.T) {
	cases := []struct {
		name  string
		frame []byte
		want  sftpRequest
	}{
		{"init", sftpFrame(fxpInit, 3), sftpRequest{Type: fxpInit, Op: "init", Quiet: true}},
		{"open read", sftpFrame(fxpOpen, 7, "/etc/hosts", fxfRead, 0), sftpRequest{Type: fxpOpen, ID: 7, Op: "open", Path: "/etc/hosts", Pflags: fxfRead}},
		{"open write", sftpFrame(fxpOpen, 8, "/tmp/x", fxfWrite|fxfCreat|fxfTrunc, 0), sftpRequest{Type: fxpOpen, ID: 8, Op: "open", Path: "/tmp/x", Pflags: fxfWrite | fxfCreat | fxfTrunc, Write: true}},
		{"open append", sftpFrame(fxpOpen, 8, "/tmp/x", fxfAppend, 0), sftpRequest{Type: fxpOpen, ID: 8, Op: "open", Path: "/tmp/x", Pflags: fxfAppend, Write: true}},
		{"read", sftpFrame(fxpRead, 9, "h1", uint64(0), 32768), sftpRequest{Type: fxpRead, ID: 9, Op: "read", Handle: "h1", OnHandle: true, Len: 32768}},
		{"write", sftpFrame(fxpWrite, 10, "h1", uint64(5), []byte("hello")), sftpRequest{Type: fxpWrite, ID: 10, Op: "write", Handle: "h1", OnHandle: true, Write: true, Len: 5}},
		{"close", sftpFrame(fxpClose, 11, "h1"), sftpRequest{Type: fxpClose, ID: 11, Op: "close", Handle: "h1", OnHandle: true}},
		{"remove", sftpFrame(fxpRemove, 12, "/a"), sftpRequest{Type: fxpRemove, ID: 12, Op: "remove", Path: "/a", Write: true}},
		{"rename", sftpFrame(fxpRename, 13, "/a", "/b"), sftpRequest{Type: fxpRename, ID: 13, Op: "rename", Path: "/a", Target: "/b", Write: true}},
		{"setstat", sftpFrame(fxpSetstat, 14, "/a", 0), sftpRequest{Type: fxpSetstat, ID: 14, Op: "setstat", Path: "/a", Write: true}},
		{"fsetstat", sftpFrame(fxpFsetstat, 14, "h", 0), sftpRequest{Type: fxpFsetstat, ID: 14, Op: "fsetstat", Handle: "h", OnHandle: true, Write: true}},
		{"stat", sftpFrame(fxpStat, 15, "/a"), sftpRequest{Type: fxpStat, ID: 15, Op: "stat", Path: "/a"}},
		{"opendir", sftpFrame(fxpOpendir, 16, "/d"), sftpRequest{Type: fxpOpendir, ID: 16, Op: "opendir", Path: "/d"}},
		{"symlink", sftpFrame(fxpSymlink, 17, "/t", "/l"), sftpRequest{Type: fxpSymlink, ID: 17, Op: "symlink", Path: "/t", Target: "/l", Write: true}},
		{"posix-rename", sftpFrame(fxpExtended, 18, "posix-rename@openssh.com", "/a", "/b"), sftpRequest{Type: fxpExtended, ID: 18, Op: "rename", Path: "/a", Target: "/b", Write: true}},
		{"statvfs", sftpFrame(fxpExtended, 19, "statvfs@openssh.com", "/"), sftpRequest{Type: fxpExtended, ID: 19, Op: "statvfs", Path: "/"}},
		{"fsync", sftpFrame(fxpExtended, 20, "fsync@openssh.com", "h"), sftpRequest{Type: fxpExtended, ID: 20, Op: "fsync", Handle: "h", OnHandle: true, Write: true}},
		{"limits", sftpFrame(fxpExtended, 21, "limits@openssh.com"), sftpRequest{Type: fxpExtended, ID: 21, Op: "limits", Quiet: true}},
		{"unknown extension", sftpFrame(fxpExtended, 22, "evil@example.com", "/"), sftpRequest{Type: fxpExtended, ID: 22}},
		{"unknown type", sftpFrame(99, 23), sftpRequest{Type: 99, ID: 23}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseSFTPRequest(c.frame)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got %+v\nwant %+v", got, c.want)
			}
		})
	}
	for _, bad := range [][]byte{
		{0, 0, 0, 1, fxpOpen},
		sftpFrame(fxpOpen, 1)[:12],
		append(sftpFrame(fxpRemove, 1), 0)[:9],
		{0, 0, 0, 9, fxpRemove, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff},
	} {
		if _, err := parseSFTPRequest(bad); err == nil {
			t.Errorf("parsed malformed %x", bad)
		}
	}
}

func TestSSHSFTPParseResponse(t *testing.T) {
	p, err := parseSFTPResponse(sftpStatusFrame(5, fxPermissionDenied, "no"))
	if err != nil || p.Type != fxpStatus || p.ID != 5 || p.Code != fxPermissionDenied || p.Msg != "no" {
		t.Errorf("status: %+v %v", p, err)
	}
	p, err = parseSFTPResponse(sftpFrame(fxpStatus, 6, fxOK))
	if err != nil || p.Code != fxOK || p.Msg != "" {
		t.Errorf("short status: %+v %v", p, err)
	}
	p, err = parseSFTPResponse(sftpFrame(fxpHandle, 7, "h7"))
	if err != nil || p.Handle != "h7" {
		t.Errorf("handle: %+v %v", p, err)
	}
	p, err = parseSFTPResponse(sftpFrame(fxpData, 8, []byte("abcdef")))
	if err != nil || p.Len != 6 {
		t.Errorf("data: %+v %v", p, err)
	}
	if _, err := parseSFTPResponse(sftpFrame(fxpHandle, 7)); err == nil {
		t.Errorf("handle without a handle parsed")
	}
}

func TestSSHSFTPReadPacket(t *testing.T) {
	f := sftpFrame(fxpStat, 1, "/x")
	got, err := readSFTPPacket(bytes.NewReader(f), nil)
	if err != nil || !bytes.Equal(got, f) {
		t.Fatalf("%x %v", got, err)
	}
	// A reused buffer is used, not reallocated.
	buf := make([]byte, 0, 1024)
	got, _ = readSFTPPacket(bytes.NewReader(f), buf)
	if &got[0] != &buf[:1][0] {
		t.Errorf("buffer not reused")
	}
	for _, c := range []struct {
		in   []byte
		want string
	}{
		{[]byte{0xff, 0xff, 0xff, 0xff, 3}, "outside 1.."},
		{[]byte{0, 0, 0, 0}, "outside 1.."},
		{[]byte{0, 0, 0, 10, 3, 0}, "unexpected EOF"},
	} {
		_, err := readSFTPPacket(bytes.NewReader(c.in), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%x: %v, want %q", c.in, err, c.want)
		}
	}
	if _, err := readSFTPPacket(bytes.NewReader(nil), nil); !errors.Is(err, io.EOF) {
		t.Errorf("empty: %v", err)
	}
}

func TestSSHOpenFlags(t *testing.T) {
	if got := openFlags(fxfWrite | fxfCreat | fxfTrunc); got != "write,create,truncate" {
		t.Error(got)
	}
	if got := openFlags(0); got != "no flags" {
		t.Error(got)
	}
}

func TestSSHIncompleteUTF8(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{"abc", 0}, {"é", 0}, {"a\xc3", 1}, {"a\xe2\x82", 2}, {"a\xe2", 1}, {"\xf0\x9f\x98", 3}, {"\xf0\x9f\x98\x80", 0}, {"\x80\x80\x80\x80", 0}, {"", 0},
	} {
		if got := incompleteUTF8([]byte(c.in)); got != c.want {
			t.Errorf("incompleteUTF8(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestSSHSafeText(t *testing.T) {
	for in, want := range map[string]string{"abc": "abc", "é": "é", "a\xffb": `a\xffb`, "\xc3": `\xc3`} {
		if got := safeText([]byte(in)); got != want {
			t.Errorf("safeText(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzSSHSFTPRequest: the request parser never panics and never claims a
// path or handle longer than the packet.
func FuzzSSHSFTPRequest(f *testing.F) {
	f.Add(sftpFrame(fxpOpen, 7, "/etc/hosts", fxfRead, 0))
	f.Add(sftpFrame(fxpWrite, 10, "h1", uint64(5), []byte("hello")))
	f.Add(sftpFrame(fxpExtended, 18, "posix-rename@openssh.com", "/a", "/b"))
	f.Add(sftpFrame(fxpExtended, 18, "copy-data", "h", uint64(0), uint64(1), "w"))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := parseSFTPRequest(b)
		if err != nil {
			return
		}
		if len(q.Path)+len(q.Target)+len(q.Handle) > len(b) {
			t.Fatalf("fields longer than the packet: %+v", q)
		}
		if q.Write && q.Quiet {
			t.Fatalf("a quiet write: %+v", q)
		}
		_, _ = readSFTPPacket(bytes.NewReader(b), nil)
	})
}

// FuzzSSHSFTPResponse: the response parser never panics.
func FuzzSSHSFTPResponse(f *testing.F) {
	f.Add(sftpStatusFrame(5, fxPermissionDenied, "no"))
	f.Add(sftpFrame(fxpHandle, 7, "h7"))
	f.Add(sftpFrame(fxpData, 8, []byte("abcdef")))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseSFTPResponse(b)
		if err == nil && p.Len > len(b) {
			t.Fatalf("data longer than the packet: %+v", p)
		}
	})
}
