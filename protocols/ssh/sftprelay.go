package ssh

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/airlockhq/airlock/authz"
	sshauthz "github.com/airlockhq/airlock/authz/ssh"
	"github.com/airlockhq/airlock/proxy"
	"github.com/airlockhq/airlock/recorder"
)

// The SFTP relay. Every operation on a path (open with its flags, stat,
// opendir, remove, rename, mkdir, rmdir, setstat, symlink, ...) is
// authorized and recorded, and forwarded only once acknowledged. An open
// file's reads and writes are counted, and recorded as the open's result
// when it is closed. Under --files read, an operation that would change
// anything is answered with SSH_FX_PERMISSION_DENIED and never reaches the
// target.

// sftpFile is an open handle.
type sftpFile struct {
	path          string
	write, dir    bool
	adm           *proxy.Admitted
	read, written int64
	err           string
}

// sftpPending is a forwarded request waiting for its answer.
type sftpPending struct {
	q    sftpRequest
	adm  *proxy.Admitted // an operation on a path
	file *sftpFile       // an operation on a handle
}

type sftpRelay struct {
	s *sessionChan

	mu      sync.Mutex
	pending map[uint32]*sftpPending
	handles map[string]*sftpFile

	wmu sync.Mutex // the agent's channel: answers from the target and refusals
}

func (s *sessionChan) relaySFTP() {
	defer close(s.relayDone)
	r := &sftpRelay{s: s, pending: map[uint32]*sftpPending{}, handles: map[string]*sftpFile{}}
	go func() {
		defer close(s.stdinDone)
		r.fromAgent()
	}()
	errDone := make(chan struct{})
	go func() {
		defer close(errDone)
		n, _ := io.Copy(s.agentErr(), s.up.Stderr())
		s.errOut.Add(n)
	}()
	r.fromTarget()
	<-errDone
	r.finish()
	s.closeAfterOutput()
}

// fromAgent reads the agent's packets, decides and forwards them.
func (r *sftpRelay) fromAgent() {
	s := r.s
	var buf []byte
	for {
		frame, err := readSFTPPacket(s.ch, buf)
		if err != nil {
			var fe *errSFTPFrame
			switch {
			case errors.As(err, &fe):
				r.violation(fe.Error())
			case errors.Is(err, io.EOF):
				_ = s.up.CloseWrite()
			}
			return
		}
		buf = frame[:0]
		q, err := parseSFTPRequest(frame)
		if err != nil {
			r.violation(err.Error())
			return
		}
		if !r.admit(q) {
			continue
		}
		if _, err := s.up.Write(frame); err != nil {
			return
		}
		s.in.Add(int64(len(frame)))
	}
}

// violation records a malformed packet and closes the channel: the
// stream cannot be framed past it.
func (r *sftpRelay) violation(msg string) {
	r.s.c.refuse(authz.Decision{
		Text: "sftp packet", Rule: "protocol", Reason: "malformed SFTP packet: " + msg,
		Class: authz.Classification{Kind: sshauthz.KindProtocolError},
	})
	_ = r.s.ch.Close()
	_ = r.s.up.Close()
}

// answer writes a status for a request that was not forwarded, with why
// as its message. OpenSSH's sftp and scp print only the status code's
// text ("Permission denied"), never the message, so why also goes to the
// channel's stderr, which their ssh prints on the terminal: the person
// at the client reads the reason the reviewer reads. Clients that show
// the message (paramiko's IOError, WinSCP) show it from the status.
func (r *sftpRelay) answer(id, code uint32, msg string) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	// The reason first, so it is printed before the client's own line.
	_, _ = io.WriteString(r.s.agentErr(), msg+"\n")
	_, _ = r.s.agentOut().Write(sftpStatusFrame(id, code, msg))
}

// admit decides a request; false means it was answered here.
func (r *sftpRelay) admit(q sftpRequest) bool {
	s := r.s
	g := s.c.sess.Grant()
	switch {
	case q.Op == "":
		what := fmt.Sprintf("sftp request type %d", q.Type)
		msg := s.c.refuse(sshauthz.Refuse("SFTP", what, what+" is not one airlock can read, so it was not forwarded"))
		r.answer(q.ID, fxOpUnsupported, msg)
		return false
	case q.Quiet:
		return true
	case q.OnHandle:
		r.mu.Lock()
		f := r.handles[q.Handle]
		r.mu.Unlock()
		if q.Write {
			path := "(unknown handle)"
			if f != nil {
				path = f.path
			}
			if d := sshauthz.AuthorizeSFTP(g, sshauthz.SFTPOp{Op: q.Op, Path: path, Write: true}); !d.Allow {
				r.answer(q.ID, fxPermissionDenied, s.c.refuse(d))
				return false
			}
		}
		r.mu.Lock()
		if f != nil {
			if q.Type == fxpWrite {
				f.written += int64(q.Len)
			}
			r.pending[q.ID] = &sftpPending{q: q, file: f}
		}
		r.mu.Unlock()
		return true
	}
	op := sshauthz.SFTPOp{Op: q.Op, Path: safeText([]byte(q.Path)), Target: safeText([]byte(q.Target)), Write: q.Write}
	if q.Type == fxpOpen {
		op.Detail = openFlags(q.Pflags)
	}
	forwarded := false
	_ = s.c.sess.Forward(authz.SingleVerdict(sshauthz.AuthorizeSFTP(g, op)), nil, func(adm proxy.Admitted) error {
		r.mu.Lock()
		r.pending[q.ID] = &sftpPending{q: q, adm: &adm}
		r.mu.Unlock()
		forwarded = true
		return nil
	}, func(ref *proxy.Refusal) error {
		code := uint32(fxPermissionDenied)
		if ref.Kind == "recorder" {
			code = fxFailure
		}
		r.answer(q.ID, code, ref.Msg)
		return nil
	})
	return forwarded
}

// fromTarget relays the target's answers, recording outcomes.
func (r *sftpRelay) fromTarget() {
	s := r.s
	var buf []byte
	for {
		frame, err := readSFTPPacket(s.up, buf)
		if err != nil {
			var fe *errSFTPFrame
			if errors.As(err, &fe) {
				s.log.Warn("the target sent a malformed sftp packet", "err", err)
				_ = s.up.Close()
			}
			return
		}
		buf = frame[:0]
		if p, err := parseSFTPResponse(frame); err == nil {
			r.answered(p)
		}
		r.wmu.Lock()
		_, err = s.agentOut().Write(frame)
		r.wmu.Unlock()
		if err != nil {
			return
		}
		s.out.Add(int64(len(frame)))
	}
}

func statusText(p sftpResponse) string {
	if p.Msg != "" {
		return fmt.Sprintf("status %d: %s", p.Code, safeText([]byte(p.Msg)))
	}
	return fmt.Sprintf("status %d", p.Code)
}

func (r *sftpRelay) answered(p sftpResponse) {
	if p.Type == fxpVersion {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	pd := r.pending[p.ID]
	if pd == nil {
		return
	}
	delete(r.pending, p.ID)
	failed := p.Type == fxpStatus && p.Code != fxOK
	switch {
	case pd.adm != nil:
		q := pd.q
		if p.Type == fxpHandle && (q.Type == fxpOpen || q.Type == fxpOpendir) {
			r.handles[p.Handle] = &sftpFile{path: q.Path, write: q.Write, dir: q.Type == fxpOpendir, adm: pd.adm}
			return
		}
		res := recorder.Result{Executed: true}
		if failed {
			res.Error = statusText(p)
		}
		pd.adm.Done(0, res)
	case pd.file != nil:
		f := pd.file
		switch pd.q.Type {
		case fxpRead:
			if p.Type == fxpData {
				f.read += int64(p.Len)
			}
		case fxpWrite:
			if failed {
				f.written -= int64(pd.q.Len)
				f.err = statusText(p)
			}
		case fxpClose:
			delete(r.handles, pd.q.Handle)
			res := recorder.Result{Executed: true, BytesOut: f.read, BytesIn: f.written, Error: f.err}
			if failed && res.Error == "" {
				res.Error = "close: " + statusText(p)
			}
			f.adm.Done(0, res)
		}
	}
}

// finish records what the channel's end left open.
func (r *sftpRelay) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for h, f := range r.handles {
		delete(r.handles, h)
		res := recorder.Result{Executed: true, BytesOut: f.read, BytesIn: f.written, Error: f.err}
		if res.Error == "" {
			res.Error = "the channel ended before the file was closed"
		}
		f.adm.Done(0, res)
	}
	for id, pd := range r.pending {
		delete(r.pending, id)
		if pd.adm != nil {
			pd.adm.Done(0, recorder.Result{Executed: true, Error: "the channel ended before the target answered"})
		}
	}
}
