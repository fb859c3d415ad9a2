package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/authz"
	sshauthz "github.com/airlockhq/airlock/authz/ssh"
	"github.com/airlockhq/airlock/proxy"
	"github.com/airlockhq/airlock/recorder"
)

// Payloads of session channel requests (RFC 4254 section 6).
type (
	ptyReqMsg struct {
		Term          string
		Cols, Rows    uint32
		Width, Height uint32
		Modes         string
	}
	envMsg struct {
		Name, Value string
	}
	execMsg struct {
		Command string
	}
	subsystemMsg struct {
		Name string
	}
	windowChangeMsg struct {
		Cols, Rows    uint32
		Width, Height uint32
	}
	signalMsg struct {
		Signal string
	}
	exitStatusMsg struct {
		Status uint32
	}
	exitSignalMsg struct {
		Signal     string
		CoreDumped bool
		Error      string
		Lang       string
	}
)

// exitRefused is the exit status of a command airlock refused: the
// reason is on stderr. (126 is the shell's "found but cannot execute".)
const exitRefused = 126

// sessionChan is one session channel: at most one exec, shell or
// subsystem, with its pty and environment.
type sessionChan struct {
	c   *conn
	ch  ssh.Channel
	log *slog.Logger

	// reqs are the agent's requests on the channel, nil once it closed;
	// queued are those that came while an exec, shell or subsystem
	// waited for an approver, handled after it (see admitStart).
	reqs   <-chan *ssh.Request
	queued []*ssh.Request
	// heldIn reads the agent's input from the time a command with a pty
	// started to wait, for a Ctrl-C (see admitStart); nil otherwise.
	heldIn *heldInput

	// The target's side, opened at the first request that must reach it.
	up         ssh.Channel
	upReqsDone chan struct{}

	pty     *ptyReqMsg
	started bool // an exec, shell or subsystem was answered
	running atomic.Bool
	adm     *proxy.Admitted
	rec     *chanRecorder
	kind    string // "exec", "shell", "subsystem"
	sftp    bool

	relayDone chan struct{}
	stdinDone chan struct{}
	in        atomic.Int64
	out       atomic.Int64
	errOut    atomic.Int64

	// eofMu orders the agent channel's writes (shared) before its EOF
	// (exclusive): x/crypto's channel does not synchronise CloseWrite
	// with concurrent writes.
	eofMu sync.RWMutex

	exitMu        sync.Mutex
	exitStatus    *int
	exitSignal    string
	signalPayload []byte // the exit-signal request, relayed as it came
	relayErr      error
	// sentStatus and sentSignal are the exit the agent was sent.
	sentStatus *int
	sentSignal string
}

func (c *conn) session(nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	s := &sessionChan{c: c, ch: ch, log: c.log, reqs: reqs}
	c.track(s)
	defer c.untrack(s)
	for req := s.next(); req != nil; req = s.next() {
		s.request(req)
	}
	// The agent closed the channel, or the connection ended: stop the
	// target's side too, then record the outcome.
	if s.up != nil {
		s.up.Close()
	}
	s.finish()
	if s.kind != "" {
		// The session's end says how its last command ended.
		s.exitMu.Lock()
		status, signal := s.sentStatus, s.sentSignal
		s.exitMu.Unlock()
		c.sess.SetExit(status, signal)
	}
}

// next is the agent's next request on the channel, nil once the channel
// closed.
func (s *sessionChan) next() *ssh.Request {
	if len(s.queued) > 0 {
		req := s.queued[0]
		s.queued = s.queued[1:]
		return req
	}
	if s.reqs == nil {
		return nil
	}
	req, ok := <-s.reqs
	if !ok {
		s.reqs = nil
		return nil
	}
	return req
}

func (s *sessionChan) request(req *ssh.Request) {
	g := s.c.sess.Grant()
	switch req.Type {
	case "pty-req":
		s.ptyReq(req, g)
	case "env":
		s.envReq(req)
	case "exec", "shell", "subsystem":
		if s.started {
			_ = req.Reply(false, nil)
			return
		}
		s.start(req, g)
	case "window-change":
		var m windowChangeMsg
		if ssh.Unmarshal(req.Payload, &m) != nil || s.up == nil {
			_ = req.Reply(false, nil)
			return
		}
		if s.rec != nil && s.pty != nil {
			s.rec.resize(m.Cols, m.Rows, "")
		}
		_, _ = s.up.SendRequest("window-change", false, req.Payload)
		_ = req.Reply(true, nil)
	case "signal":
		var m signalMsg
		if ssh.Unmarshal(req.Payload, &m) != nil || !s.running.Load() {
			_ = req.Reply(false, nil)
			return
		}
		s.rec.note("signal", safeText([]byte(m.Signal)))
		_, _ = s.up.SendRequest("signal", false, req.Payload)
		_ = req.Reply(true, nil)
	case "break":
		if !s.running.Load() || s.pty == nil {
			_ = req.Reply(false, nil)
			return
		}
		ok, _ := s.up.SendRequest("break", true, req.Payload)
		_ = req.Reply(ok, nil)
	case "x11-req":
		s.c.refuse(sshauthz.Refuse(sshauthz.KindX11, "x11-req", "X11 forwarding is not allowed through airlock"))
		_ = req.Reply(false, nil)
	case "auth-agent-req@openssh.com":
		s.c.refuse(sshauthz.Refuse(sshauthz.KindAgentForward, "auth-agent-req", "agent forwarding is not allowed through airlock: the gateway holds the target's credentials"))
		_ = req.Reply(false, nil)
	case "keepalive@openssh.com":
		_ = req.Reply(false, nil)
	default:
		s.c.refuse(sshauthz.Refuse(sshauthz.KindOtherRequest, "channel request "+safeText([]byte(req.Type)), fmt.Sprintf("channel request %q is not supported through airlock", req.Type)))
		_ = req.Reply(false, nil)
	}
}

// malformed records a request whose payload does not parse.
func (s *sessionChan) malformed(req *ssh.Request) {
	s.c.refuse(authz.Decision{
		Text: safeText([]byte(req.Type)) + " request", Rule: "protocol",
		Reason: fmt.Sprintf("malformed %s request (%d bytes)", req.Type, len(req.Payload)),
		Class:  authz.Classification{Kind: sshauthz.KindProtocolError},
	})
	_ = req.Reply(false, nil)
}

func (s *sessionChan) ptyReq(req *ssh.Request, g *authz.Grant) {
	var m ptyReqMsg
	if err := ssh.Unmarshal(req.Payload, &m); err != nil {
		s.malformed(req)
		return
	}
	if s.started {
		_ = req.Reply(false, nil)
		return
	}
	if d := sshauthz.AuthorizePty(g, m.Term); !d.Allow {
		// A refused pty-req carries no reason, and OpenSSH closes the
		// channel when -t was explicit; the reason goes to stderr first.
		msg := s.c.refuse(d)
		_, _ = io.WriteString(s.agentErr(), msg+"\r\n")
		_ = req.Reply(false, nil)
		return
	}
	if err := s.openUpstream(); err != nil {
		_ = req.Reply(false, nil)
		return
	}
	ok, err := s.up.SendRequest("pty-req", true, req.Payload)
	if err == nil && ok {
		m.Term = safeText([]byte(m.Term))
		s.pty = &m
	}
	_ = req.Reply(err == nil && ok, nil)
}

func (s *sessionChan) envReq(req *ssh.Request) {
	var m envMsg
	if err := ssh.Unmarshal(req.Payload, &m); err != nil {
		s.malformed(req)
		return
	}
	if s.started {
		_ = req.Reply(false, nil)
		return
	}
	d := sshauthz.AuthorizeEnv(m.Name, m.Value)
	d.Text = safeText([]byte(m.Name)) + "=" + safeText([]byte(m.Value))
	if !d.Allow {
		// Refused, never held (--hold-denied): a variable is no command
		// for a person to weigh, and its request comes before the one
		// that is.
		s.c.refuse(d)
		_ = req.Reply(false, nil)
		return
	}
	adm, err := s.c.sess.Admit(authz.SingleVerdict(d))
	if err != nil {
		_ = req.Reply(false, nil)
		return
	}
	adm.Settled() // a setting: nothing runs that a revocation would stop
	if err := s.openUpstream(); err != nil {
		_ = req.Reply(false, nil)
		return
	}
	ok, err := s.up.SendRequest("env", true, req.Payload)
	_ = req.Reply(err == nil && ok, nil)
}

// openUpstream opens the target's session channel, once.
func (s *sessionChan) openUpstream() error {
	if s.up != nil {
		return nil
	}
	up, reqs, err := s.c.up.conn.OpenChannel("session", nil)
	if err != nil {
		s.log.Warn("target refused a session channel", "err", err)
		return err
	}
	s.up = up
	s.upReqsDone = make(chan struct{})
	go s.targetRequests(reqs)
	return nil
}

// targetRequests takes the target's requests on the channel: the exit
// status is kept to be sent after the output, eow is passed on.
func (s *sessionChan) targetRequests(reqs <-chan *ssh.Request) {
	defer close(s.upReqsDone)
	for r := range reqs {
		switch r.Type {
		case "exit-status":
			var m exitStatusMsg
			if ssh.Unmarshal(r.Payload, &m) == nil {
				st := int(m.Status)
				s.exitMu.Lock()
				s.exitStatus = &st
				s.exitMu.Unlock()
			}
		case "exit-signal":
			var m exitSignalMsg
			if ssh.Unmarshal(r.Payload, &m) == nil {
				s.exitMu.Lock()
				s.exitSignal = safeText([]byte(m.Signal))
				s.signalPayload = append([]byte(nil), r.Payload...)
				s.exitMu.Unlock()
			}
		case "eow@openssh.com":
			_, _ = s.ch.SendRequest(r.Type, false, r.Payload)
		default:
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
	}
}

// start decides an exec, shell or subsystem request and, when allowed and
// acknowledged by the recorder, forwards it to the target.
func (s *sessionChan) start(req *ssh.Request, g *authz.Grant) {
	var (
		d         authz.Decision
		upPayload = req.Payload
	)
	s.kind = req.Type
	switch req.Type {
	case "exec":
		var m execMsg
		if err := ssh.Unmarshal(req.Payload, &m); err != nil {
			s.malformed(req)
			return
		}
		ex := sshauthz.AuthorizeExec(g, m.Command)
		d = ex.Decision
		if !utf8.ValidString(m.Command) {
			d.Text = safeText([]byte(m.Command))
		}
		cmd := ex.Command
		if cmd == "" {
			// Refused, but held under --hold-denied: if an approver
			// lets it run, it runs as the agent sent it, the text the
			// approver read.
			cmd = m.Command
		}
		upPayload = ssh.Marshal(execMsg{Command: cmd})
	case "shell":
		d = sshauthz.AuthorizeShell(g)
	case "subsystem":
		var m subsystemMsg
		if err := ssh.Unmarshal(req.Payload, &m); err != nil {
			s.malformed(req)
			return
		}
		d = sshauthz.AuthorizeSubsystem(g, safeText([]byte(m.Name)))
		s.sftp = d.Allow
	}
	if s.pty != nil {
		d.Class.Why = strings.TrimPrefix(d.Class.Why+"; with a pty", "; ")
	}
	s.started = true
	s.admitStart(func(gaveUp context.Context) {
		_ = s.c.sess.ForwardContext(gaveUp, authz.SingleVerdict(d), nil, func(adm proxy.Admitted) error {
			s.run(req, upPayload, &adm)
			return nil
		}, func(ref *proxy.Refusal) error {
			// Refused by policy, by the grant's state or because it could
			// not be recorded, or a wait for an approver that ended
			// without a yes: the agent reads why on stderr and gets exit
			// status 126; nothing reached the target.
			_ = req.Reply(true, nil)
			s.refused(ref.Msg)
			return nil
		})
	})
}

// run starts the channel's admitted request on the target and relays it.
func (s *sessionChan) run(req *ssh.Request, upPayload []byte, adm *proxy.Admitted) {
	if err := s.openUpstream(); err != nil {
		adm.Done(0, recorder.Result{Executed: false, Error: "the target refused a session channel: " + err.Error()})
		_ = req.Reply(false, nil)
		return
	}
	ok, err := s.up.SendRequest(req.Type, true, upPayload)
	if err != nil || !ok {
		why := "the target refused the " + req.Type + " request"
		if err != nil {
			why += ": " + err.Error()
		}
		adm.Done(0, recorder.Result{Executed: false, Error: why})
		_ = req.Reply(false, nil)
		return
	}
	s.adm = adm
	terminal := s.pty != nil || req.Type == "shell"
	s.rec = newChanRecorder(s.c.sess, adm.ID(0), terminal, s.c.p.maxOutput, s.c.p.window)
	if s.pty != nil {
		s.rec.resize(s.pty.Cols, s.pty.Rows, s.pty.Term)
	}
	s.running.Store(true)
	s.relayDone = make(chan struct{})
	s.stdinDone = make(chan struct{})
	_ = req.Reply(true, nil)
	if s.sftp {
		go s.relaySFTP()
	} else {
		go s.relay()
	}
}

// refused tells the agent why on stderr, exits with exitRefused and closes
// the channel.
func (s *sessionChan) refused(msg string) {
	_, _ = io.WriteString(s.agentErr(), msg+"\r\n")
	s.closeWrite()
	s.sendExit(exitRefused, "", nil)
	_ = s.ch.Close()
}

// sendExit sends the agent the exit status, or the exit-signal request
// as the target sent it, and notes what was sent for the session's end.
func (s *sessionChan) sendExit(status int, signal string, signalPayload []byte) {
	var err error
	if signalPayload != nil {
		_, err = s.ch.SendRequest("exit-signal", false, signalPayload)
	} else {
		_, err = s.ch.SendRequest("exit-status", false, ssh.Marshal(exitStatusMsg{Status: uint32(status)}))
	}
	if err != nil {
		return // the agent's channel is gone: it was told nothing
	}
	s.exitMu.Lock()
	if signalPayload != nil {
		s.sentSignal = signal
	} else {
		s.sentStatus = &status
	}
	s.exitMu.Unlock()
}

// notify writes msg on the agent's stderr of a running channel.
func (s *sessionChan) notify(msg string) {
	if !s.running.Load() || s.sftp {
		return
	}
	_, _ = io.WriteString(s.agentErr(), "\r\n"+msg+"\r\n")
}

// relay copies an exec's or shell's data both ways, recording it, then
// passes the exit status on and closes the channel.
func (s *sessionChan) relay() {
	defer close(s.relayDone)
	go s.copyStdin()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.setErr(s.copyOutput(s.agentErr(), s.up.Stderr(), "stderr", &s.errOut))
	}()
	s.setErr(s.copyOutput(s.agentOut(), s.up, "stdout", &s.out))
	wg.Wait()
	s.closeAfterOutput()
}

// closeAfterOutput sends EOF, waits for the target to close its channel
// (its exit status comes before that), relays the exit status and closes.
func (s *sessionChan) closeAfterOutput() {
	s.closeWrite()
	select {
	case <-s.upReqsDone:
	case <-s.c.done:
	}
	s.exitMu.Lock()
	status, sig, payload := s.exitStatus, s.exitSignal, s.signalPayload
	s.exitMu.Unlock()
	switch {
	case status != nil:
		s.sendExit(*status, "", nil)
	case payload != nil:
		s.sendExit(0, sig, payload)
	}
	_ = s.ch.Close()
}

func (s *sessionChan) setErr(err error) {
	if err == nil {
		return
	}
	s.exitMu.Lock()
	if s.relayErr == nil {
		s.relayErr = err
	}
	s.exitMu.Unlock()
	var lost *errRecorderLost
	if errors.As(err, &lost) {
		s.c.recorderLost(lost.err)
	}
}

// copyStdin forwards what the agent sends, recording it first; at the
// agent's EOF it sends EOF on.
func (s *sessionChan) copyStdin() {
	defer close(s.stdinDone)
	buf := make([]byte, 32<<10)
	var in io.Reader = s.ch
	if s.heldIn != nil {
		in = s.heldIn // it has been reading the channel since the wait
	}
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if rerr := s.rec.input(buf[:n]); rerr != nil {
				s.setErr(rerr)
				return
			}
			if _, werr := s.up.Write(buf[:n]); werr != nil {
				return
			}
			s.in.Add(int64(n))
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = s.up.CloseWrite()
			}
			return
		}
	}
}

// copyOutput relays one of the target's output streams to the agent,
// recording each chunk before it is passed on.
func (s *sessionChan) copyOutput(dst io.Writer, src io.Reader, stream string, count *atomic.Int64) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if rerr := s.rec.output(stream, buf[:n]); rerr != nil {
				return rerr
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return nil // the agent is gone; its side is what ended
			}
			count.Add(int64(n))
		}
		if err != nil {
			// EOF, or the target's side closed: the exit status (or its
			// absence) says how it ended.
			return nil
		}
	}
}

// finish records the channel's outcome once its relay is over.
func (s *sessionChan) finish() {
	if s.adm == nil {
		return
	}
	// The relay ends when the target's side closes, or when the
	// connection does.
	<-s.relayDone
	if s.stdinDone != nil {
		select {
		case <-s.stdinDone:
		case <-time.After(time.Second):
		}
	}
	s.running.Store(false)
	s.rec.close()
	res := recorder.Result{
		Executed: true,
		BytesIn:  s.in.Load(), BytesOut: s.out.Load(), BytesErr: s.errOut.Load(),
		OutputCapped: s.rec.isCapped(),
	}
	s.exitMu.Lock()
	res.ExitStatus, res.ExitSignal = s.exitStatus, s.exitSignal
	relayErr := s.relayErr
	s.exitMu.Unlock()
	switch {
	case res.ExitStatus != nil:
		res.Tag = fmt.Sprintf("exit %d", *res.ExitStatus)
	case res.ExitSignal != "":
		res.Tag = "signal " + res.ExitSignal
	default:
		res.Error = "ended without an exit status"
		if relayErr != nil {
			res.Error += ": " + relayErr.Error()
		} else if why := s.c.endReason(); why != "" {
			res.Error += ": " + why
		}
	}
	s.adm.Done(0, res)
}

// agentOut and agentErr write to the agent's stdout and stderr; see eofMu.
func (s *sessionChan) agentOut() io.Writer { return agentWriter{s, s.ch} }
func (s *sessionChan) agentErr() io.Writer { return agentWriter{s, s.ch.Stderr()} }

type agentWriter struct {
	s *sessionChan
	w io.Writer
}

func (a agentWriter) Write(p []byte) (int, error) {
	a.s.eofMu.RLock()
	defer a.s.eofMu.RUnlock()
	return a.w.Write(p)
}

// closeWrite sends EOF to the agent once no write is under way.
func (s *sessionChan) closeWrite() {
	s.eofMu.Lock()
	defer s.eofMu.Unlock()
	_ = s.ch.CloseWrite()
}
