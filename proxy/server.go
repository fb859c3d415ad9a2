// Package proxy owns the session lifecycle that every protocol listener
// shares: accept, authenticate the agent against its grants, record the
// session's start, admit each statement (authorized and recorded before it
// is forwarded), record results, end the session when either side stops or
// the grant is revoked or expires. It knows no wire format.
package proxy

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/recorder"
)

// Grants is the control plane as the proxy needs it.
type Grants interface {
	// ForAgent returns every grant of agent; it fails while the store
	// cannot confirm it is current.
	ForAgent(agent string) ([]*authz.Grant, error)
	// Ready fails while the store cannot confirm it is current.
	Ready() error
	// OnChange registers a callback for every changed grant.
	OnChange(func(*authz.Grant))
}

// Recorder opens the event log of a session.
type Recorder interface {
	Open(session string, meta recorder.Meta) *recorder.Log
}

// Observer is told what sessions do, for metrics. metrics.Metrics is one.
type Observer interface {
	SessionStarted(proto string)
	SessionEnded(proto string)
	AuthFailed(proto, reason string)
	// LoginLocked counts a client address or agent (scope "source" or
	// "agent") locked out after too many failed logins.
	LoginLocked(proto, scope string)
	Statements(proto string, allowed, denied int)
	Committed(d time.Duration, err error)
}

type noObserver struct{}

func (noObserver) SessionStarted(string)          {}
func (noObserver) SessionEnded(string)            {}
func (noObserver) AuthFailed(string, string)      {}
func (noObserver) LoginLocked(string, string)     {}
func (noObserver) Statements(string, int, int)    {}
func (noObserver) Committed(time.Duration, error) {}

// Denials hears of denied statements, each as its recorded event (without
// its seq and chain). It must not block: it runs on the session's path.
// notify.Notifier is one.
type Denials interface {
	StatementDenied(ev *recorder.Event)
}

// Holds keeps held messages until a person decides them. Wait files h and
// returns it decided: approved or denied by a person, expired at
// h.ExpiresAt, or cancelled when ctx ends (with its cause as the comment).
type Holds interface {
	Wait(ctx context.Context, h *authz.Hold) (*authz.Hold, error)
}

// Protocol is one listener's wire protocol.
type Protocol interface {
	// Name is the protocol's name in events and logs ("postgres").
	Name() string
	// Serve runs one client connection until it ends. The server closes
	// the client connection after Serve returns.
	Serve(ctx context.Context, c *Conn)
}

// Server accepts connections for the protocol listeners and tracks their
// sessions, so revocations and shutdown reach every live one.
type Server struct {
	Config   *config.Config
	Grants   Grants
	Recorder Recorder
	Log      *slog.Logger
	// Gateway names this gateway instance in every event.
	Gateway string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Observer receives counts for metrics; nil discards them.
	Observer Observer
	// Denials is told of every denied statement once its event is
	// recorded (notifications); nil: nobody is.
	Denials Denials
	// Holds is where a held message waits for a person (control's
	// HoldStore); nil: a message a grant holds is refused, never run
	// unapproved.
	Holds Holds

	once     sync.Once
	throttle *loginThrottle
	mu       sync.Mutex
	sessions map[*Session]struct{}
	conns    sync.WaitGroup
	baseCtx  context.Context
	stop     context.CancelCauseFunc
}

// ErrShutdown is the cause given to sessions ended by Shutdown.
var ErrShutdown = errors.New("gateway shutting down")

func (s *Server) init() {
	s.once.Do(func() {
		s.sessions = map[*Session]struct{}{}
		// The server's own context: sessions outlive the request that
		// started the listener and end only through Shutdown or their
		// own cause.
		s.baseCtx, s.stop = context.WithCancelCause(context.Background())
		if s.Observer == nil {
			s.Observer = noObserver{}
		}
		s.throttle = newLoginThrottle(s.Config.Limits.LoginFailures, s.now)
		s.Grants.OnChange(s.grantChanged)
	})
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Serve accepts connections on l until l is closed, handing each to p.
func (s *Server) Serve(l net.Listener, p Protocol) error {
	s.init()
	log := s.Log.With("proto", p.Name())
	log.Info("listening", "addr", l.Addr().String())
	for {
		nc, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		if s.baseCtx.Err() != nil {
			nc.Close()
			continue
		}
		sc := &stallConn{Conn: nc, timeout: s.Config.Limits.MessageTimeout}
		if sc.timeout <= 0 {
			sc.timeout = 30 * time.Second
		}
		c := &Conn{
			Conn:   sc,
			ID:     NewSessionID(),
			Proto:  p.Name(),
			Remote: nc.RemoteAddr().String(),
			srv:    s,
			stall:  sc,
		}
		c.log = log.With("session", c.ID, "remote", c.Remote)
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			defer nc.Close()
			p.Serve(s.baseCtx, c)
		}()
	}
}

// Shutdown ends every session with ErrShutdown and waits for their
// connections to finish, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.stop(ErrShutdown)
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// grantChanged ends the live sessions of a grant that is no longer
// active and hands the others the new copy.
func (s *Server) grantChanged(g *authz.Grant) {
	s.mu.Lock()
	var hit []*Session
	for ss := range s.sessions {
		if ss.grantID == g.ID {
			hit = append(hit, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range hit {
		ss.setGrant(g)
	}
}

func (s *Server) track(ss *Session) {
	s.mu.Lock()
	s.sessions[ss] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) untrack(ss *Session) {
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
}

// Sessions is the number of live sessions.
func (s *Server) Sessions() int {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// OldestSession is when the longest-running live session started; zero
// when there is none. The gateway's heartbeat carries it, so that if the
// gateway stops, others know how far back to look for its open sessions.
func (s *Server) OldestSession() time.Time {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldest time.Time
	for ss := range s.sessions {
		if oldest.IsZero() || ss.started.Before(oldest) {
			oldest = ss.started
		}
	}
	return oldest
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewSessionID returns a fresh session id: "ses_" and 80 random bits, safe
// in a NATS subject.
func NewSessionID() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("proxy: no randomness: " + err.Error())
	}
	return "ses_" + idEncoding.EncodeToString(b[:])
}

// Param is a bound parameter as the recorder keeps it: cut to
// recorder.param_max_bytes, binary values base64-encoded, and values left
// out when recorder.redact_params is set. null marks an SQL NULL.
func (s *Server) Param(v []byte, binary, null bool) recorder.Param {
	p, _ := s.AppendParam(nil, v, binary, null)
	return p
}

// AppendParam is Param with the recorded value appended to buf, and the
// Param's Value a view of what it appended: for a protocol that keeps
// bound parameters in a buffer of its own, reused when it binds again
// (whatever keeps a Param past that must copy it). It returns the grown
// buffer.
func (s *Server) AppendParam(buf, v []byte, binary, null bool) (recorder.Param, []byte) {
	if null {
		return recorder.Param{Null: true}, buf
	}
	p := recorder.Param{Size: len(v), Format: "text"}
	if s.Config.Recorder.RedactParams {
		p.Format, p.Redacted = "", true
		return p, buf
	}
	if max := s.Config.Recorder.ParamMaxBytes; max > 0 && len(v) > max {
		v, p.Truncated = v[:max], true
		// Do not split the last character of a text value.
		for i := 0; i < utf8.UTFMax-1 && !binary && len(v) > 0 && !utf8.Valid(v); i++ {
			v = v[:len(v)-1]
		}
	}
	start := len(buf)
	if binary || !utf8.Valid(v) {
		p.Format = "base64"
		buf = base64.StdEncoding.AppendEncode(buf, v)
	} else {
		buf = append(buf, v...)
	}
	if added := buf[start:]; len(added) > 0 {
		p.Value = unsafe.String(&added[0], len(added))
	}
	return p, buf
}
