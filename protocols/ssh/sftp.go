package ssh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The SFTP codec (draft-ietf-secsh-filexfer-02, version 3, the one
// OpenSSH speaks, with OpenSSH's extensions): just enough of each packet to
// authorize and record it. Packets are relayed as they came; nothing is
// re-encoded.

// Packet types.
const (
	fxpInit          = 1
	fxpVersion       = 2
	fxpOpen          = 3
	fxpClose         = 4
	fxpRead          = 5
	fxpWrite         = 6
	fxpLstat         = 7
	fxpFstat         = 8
	fxpSetstat       = 9
	fxpFsetstat      = 10
	fxpOpendir       = 11
	fxpReaddir       = 12
	fxpRemove        = 13
	fxpMkdir         = 14
	fxpRmdir         = 15
	fxpRealpath      = 16
	fxpStat          = 17
	fxpRename        = 18
	fxpReadlink      = 19
	fxpSymlink       = 20
	fxpStatus        = 101
	fxpHandle        = 102
	fxpData          = 103
	fxpName          = 104
	fxpAttrs         = 105
	fxpExtended      = 200
	fxpExtendedReply = 201
)

// Status codes.
const (
	fxOK               = 0
	fxEOF              = 1
	fxPermissionDenied = 3
	fxFailure          = 4
	fxBadMessage       = 5
	fxOpUnsupported    = 8
)

// Open flags.
const (
	fxfRead   = 0x01
	fxfWrite  = 0x02
	fxfAppend = 0x04
	fxfCreat  = 0x08
	fxfTrunc  = 0x10
	fxfExcl   = 0x20
)

// maxSFTPPacket caps a packet's claimed length: OpenSSH's sftp-server
// takes up to 256 KiB, its client writes 32 KiB at a time.
const maxSFTPPacket = 256<<10 + 1024

// errSFTPFrame is a packet that cannot be framed or read.
type errSFTPFrame struct{ msg string }

func (e *errSFTPFrame) Error() string { return "sftp: " + e.msg }

// readSFTPPacket reads one packet (length, type, body) into buf, reusing
// it when large enough, and returns the whole frame. It never allocates
// more than maxSFTPPacket, whatever the peer claims.
func readSFTPPacket(r io.Reader, buf []byte) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n < 1 || n > maxSFTPPacket {
		return nil, &errSFTPFrame{fmt.Sprintf("packet claims length %d, outside 1..%d", n, maxSFTPPacket)}
	}
	size := 4 + int(n)
	if cap(buf) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	copy(buf, h[:])
	if _, err := io.ReadFull(r, buf[4:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// sftpReader reads the fields of a packet body.
type sftpReader struct {
	b   []byte
	err error
}

func (r *sftpReader) fail(what string) {
	if r.err == nil {
		r.err = &errSFTPFrame{"truncated " + what}
	}
}

func (r *sftpReader) u32(what string) uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *sftpReader) u64(what string) uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *sftpReader) str(what string) []byte {
	n := r.u32(what + " length")
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(r.b)) {
		r.fail(what)
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

// sftpRequest is a client packet as authorization needs it.
type sftpRequest struct {
	Type byte
	ID   uint32
	// Op names the operation in records: "open", "remove", or an
	// extension's name ("posix-rename@openssh.com").
	Op           string
	Path, Target string
	Handle       string
	Pflags       uint32
	// Write is set for operations that change files.
	Write bool
	// OnHandle is set for operations on an open handle (read, write,
	// close, fstat, ...); Path is empty for them.
	OnHandle bool
	// Quiet operations carry no path and change nothing (limits,
	// home-directory): allowed under the subsystem's grant, not recorded
	// one by one.
	Quiet bool
	// Len is the data length of a write, or the length a read asks for.
	Len int
}

// parseSFTPRequest reads a client packet's frame (length included). An
// error means the packet is malformed; an unknown type or extension is not
// an error: Op is then "" and the caller refuses it.
func parseSFTPRequest(frame []byte) (sftpRequest, error) {
	var q sftpRequest
	if len(frame) < 5 {
		return q, &errSFTPFrame{"packet shorter than its type"}
	}
	q.Type = frame[4]
	r := &sftpReader{b: frame[5:]}
	if q.Type == fxpInit {
		r.u32("version")
		q.Op, q.Quiet = "init", true
		return q, r.err
	}
	q.ID = r.u32("request id")
	path := func() string { return string(r.str("path")) }
	handle := func() { q.Handle, q.OnHandle = string(r.str("handle")), true }
	switch q.Type {
	case fxpOpen:
		q.Op, q.Path = "open", path()
		q.Pflags = r.u32("open flags")
		q.Write = q.Pflags&(fxfWrite|fxfAppend|fxfCreat|fxfTrunc) != 0
	case fxpClose:
		q.Op = "close"
		handle()
	case fxpRead:
		q.Op = "read"
		handle()
		r.u64("offset")
		q.Len = int(r.u32("length"))
	case fxpWrite:
		q.Op, q.Write = "write", true
		handle()
		r.u64("offset")
		q.Len = len(r.str("data"))
	case fxpLstat:
		q.Op, q.Path = "lstat", path()
	case fxpFstat:
		q.Op = "fstat"
		handle()
	case fxpSetstat:
		q.Op, q.Path, q.Write = "setstat", path(), true
	case fxpFsetstat:
		q.Op, q.Write = "fsetstat", true
		handle()
	case fxpOpendir:
		q.Op, q.Path = "opendir", path()
	case fxpReaddir:
		q.Op = "readdir"
		handle()
	case fxpRemove:
		q.Op, q.Path, q.Write = "remove", path(), true
	case fxpMkdir:
		q.Op, q.Path, q.Write = "mkdir", path(), true
	case fxpRmdir:
		q.Op, q.Path, q.Write = "rmdir", path(), true
	case fxpRealpath:
		q.Op, q.Path = "realpath", path()
	case fxpStat:
		q.Op, q.Path = "stat", path()
	case fxpRename:
		q.Op, q.Path, q.Target, q.Write = "rename", path(), path(), true
	case fxpReadlink:
		q.Op, q.Path = "readlink", path()
	case fxpSymlink:
		// OpenSSH sends the target first and the link second, the
		// reverse of the draft; recorded in the order sent.
		q.Op, q.Path, q.Target, q.Write = "symlink", path(), path(), true
	case fxpExtended:
		parseSFTPExtended(&q, r)
	}
	return q, r.err
}

func parseSFTPExtended(q *sftpRequest, r *sftpReader) {
	name := string(r.str("extension name"))
	path := func() string { return string(r.str("path")) }
	handle := func() { q.Handle, q.OnHandle = string(r.str("handle")), true }
	// Named without the vendor suffix; posix-rename is a rename.
	q.Op = strings.TrimSuffix(name, "@openssh.com")
	if q.Op == "posix-rename" {
		q.Op = "rename"
	}
	switch name {
	case "posix-rename@openssh.com", "hardlink@openssh.com":
		q.Path, q.Target, q.Write = path(), path(), true
	case "lsetstat@openssh.com":
		q.Path, q.Write = path(), true
	case "statvfs@openssh.com", "expand-path@openssh.com":
		q.Path = path()
	case "fstatvfs@openssh.com":
		handle()
	case "fsync@openssh.com":
		handle()
		q.Write = true
	case "copy-data":
		handle() // the read handle; the write handle follows
		r.u64("read offset")
		r.u64("read length")
		r.str("write handle")
		q.Write = true
	case "limits@openssh.com", "home-directory", "users-groups-by-id@openssh.com":
		q.Quiet = true
	default:
		q.Op = "" // unknown: refused
	}
}

// openFlags names an open's flags for the record.
func openFlags(f uint32) string {
	var parts []string
	for _, x := range []struct {
		bit  uint32
		name string
	}{{fxfRead, "read"}, {fxfWrite, "write"}, {fxfAppend, "append"}, {fxfCreat, "create"}, {fxfTrunc, "truncate"}, {fxfExcl, "exclusive"}} {
		if f&x.bit != 0 {
			parts = append(parts, x.name)
		}
	}
	if len(parts) == 0 {
		return "no flags"
	}
	return strings.Join(parts, ",")
}

// sftpResponse is a server packet as recording needs it.
type sftpResponse struct {
	Type byte
	ID   uint32
	// Code and Msg of a status.
	Code uint32
	Msg  string
	// Handle of a handle reply.
	Handle string
	// Len is the data length of a data reply.
	Len int
}

// parseSFTPResponse reads a server packet's frame.
func parseSFTPResponse(frame []byte) (sftpResponse, error) {
	var p sftpResponse
	if len(frame) < 5 {
		return p, &errSFTPFrame{"packet shorter than its type"}
	}
	p.Type = frame[4]
	r := &sftpReader{b: frame[5:]}
	if p.Type == fxpVersion {
		r.u32("version")
		return p, r.err
	}
	p.ID = r.u32("request id")
	switch p.Type {
	case fxpStatus:
		p.Code = r.u32("status code")
		if len(r.b) > 0 { // version 3 servers send a message; older may not
			p.Msg = string(r.str("status message"))
		}
	case fxpHandle:
		p.Handle = string(r.str("handle"))
	case fxpData:
		p.Len = len(r.str("data"))
	}
	return p, r.err
}

// sftpStatusFrame is a status packet, length included.
func sftpStatusFrame(id, code uint32, msg string) []byte {
	b := make([]byte, 4, 4+1+4+4+4+len(msg)+4+2)
	b = append(b, fxpStatus)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint32(b, code)
	b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
	b = append(b, msg...)
	b = binary.BigEndian.AppendUint32(b, 2)
	b = append(b, "en"...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}
