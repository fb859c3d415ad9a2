package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/authz"
	sshauthz "github.com/airlockhq/airlock/authz/ssh"
	"github.com/airlockhq/airlock/credential"
	"github.com/airlockhq/airlock/proxy"
)

// login is one connection's authentication. An SSH client may try several
// methods, keys and passwords; each attempt is probed without recording,
// and the outcome is recorded once: session.start when a method succeeds,
// or one auth.failed with the last reason when the handshake ends without
// one. The upstream is connected inside the successful callback, so a
// target that cannot be reached (or presents the wrong host key) fails the
// login with a banner that says why.
type login struct {
	p   *Protocol
	c   *proxy.Conn
	ctx context.Context

	// decided is set once a session was started (or refused at start);
	// later attempts are refused without recording.
	decided bool
	// recorded is set once the outcome is on record.
	recorded bool
	user     string
	agent    string
	resource string
	lastErr  *proxy.AuthError
	grant    *authz.Grant

	sess   *proxy.Session
	up     *upstream
	target *target

	// pre sends banners outside a callback's reply (see over).
	pre ssh.ServerPreAuthConn
}

// splitUser reads AGENT+RESOURCE.
func splitUser(user string) (agent, resource string, aerr *proxy.AuthError) {
	agent, resource, ok := strings.Cut(user, "+")
	if !ok || agent == "" || resource == "" {
		return "", "", &proxy.AuthError{Kind: "protocol", Msg: fmt.Sprintf("authentication failed: log in as AGENT+RESOURCE (e.g. ssh agent-1+web-1@gateway), not %q", user)}
	}
	return agent, resource, nil
}

// check reads the user name and refuses resources that are not ssh.
func (l *login) check(user string) *proxy.AuthError {
	l.user = user
	agent, resource, aerr := splitUser(user)
	if aerr != nil {
		return aerr
	}
	l.agent, l.resource = agent, resource
	if r := l.p.cfg.Resource(resource); r != nil && r.Protocol != "ssh" {
		return &proxy.AuthError{Kind: "wrong-protocol", Msg: fmt.Sprintf("authentication failed: resource %s is a %s resource, not ssh", resource, r.Protocol)}
	}
	return nil
}

// refused notes a failed attempt and returns what the client is told: a
// banner with the reason, which OpenSSH prints.
func (l *login) refused(g *authz.Grant, aerr *proxy.AuthError) error {
	l.lastErr, l.grant = aerr, g
	return &ssh.BannerError{Err: aerr, Message: "airlock: " + aerr.Msg + "\r\n"}
}

func (l *login) password(meta ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
	return l.token(meta.User(), string(pw))
}

// tokenPrompt is the keyboard-interactive prompt. OpenSSH tries
// keyboard-interactive before password, and what answers a password prompt
// for a program recognises it by its text: sshpass waits for "assword",
// expect scripts for "assword:" or "password:", pexpect's pxssh, JSch and
// Apache MINA for "password:" in any case. So the prompt ends in
// "password: ", as OpenSSH's own "user@host's password: " does, and names
// the token in the same line. Name and instruction stay empty, as sshd
// sends them: OpenSSH prints those on stderr, where a script would find an
// extra line that a direct connection does not print.
const tokenPrompt = "Grant token as password: "

func (l *login) keyboardInteractive(meta ssh.ConnMetadata, challenge ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
	if l.decided {
		return nil, errLoginOver
	}
	// A user name that names no agent and resource is refused before the
	// prompt, and a prompt left unanswered is recorded under the name.
	if aerr := l.check(meta.User()); aerr != nil {
		return nil, l.badUser(aerr)
	}
	answers, err := challenge("", "", []string{tokenPrompt}, []bool{false})
	if err != nil {
		return nil, err
	}
	if len(answers) != 1 {
		return nil, errors.New("keyboard-interactive: want one answer")
	}
	return l.token(meta.User(), answers[0])
}

func (l *login) token(user, tok string) (*ssh.Permissions, error) {
	if l.decided {
		return nil, errLoginOver
	}
	if aerr := l.check(user); aerr != nil {
		return nil, l.badUser(aerr)
	}
	match := func(v *credential.Verifier) bool { return v.CheckToken(tok) }
	if g, aerr := l.c.ProbeToken(l.agent, l.resource, match); aerr != nil {
		return nil, l.refused(g, aerr)
	}
	sess, err := l.c.Authenticate(l.ctx, l.agent, l.resource, match)
	return l.started(sess, err)
}

func (l *login) publicKey(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	if l.decided {
		return nil, errLoginOver
	}
	if aerr := l.check(meta.User()); aerr != nil {
		return nil, l.badUser(aerr)
	}
	kb := key.Marshal()
	registered := false
	for _, k := range l.p.agentKeys[l.agent] {
		if bytes.Equal(k, kb) {
			registered = true
			break
		}
	}
	if !registered {
		// No banner: the client goes on to its next key or method.
		l.lastErr = &proxy.AuthError{Kind: "bad-key", Msg: fmt.Sprintf("authentication failed for %s: public key %s is not registered for this agent (identities[].ssh_public_keys), and no grant token was given", l.agent, ssh.FingerprintSHA256(key))}
		return nil, l.lastErr
	}
	if g, aerr := l.c.ProbeKey(l.agent, l.resource); aerr != nil {
		return nil, l.refused(g, aerr)
	}
	return &ssh.Permissions{}, nil
}

// verifiedPublicKey runs once the client proved it holds the key.
func (l *login) verifiedPublicKey(meta ssh.ConnMetadata, key ssh.PublicKey, perms *ssh.Permissions, _ string) (*ssh.Permissions, error) {
	if l.decided {
		return nil, errLoginOver
	}
	if aerr := l.check(meta.User()); aerr != nil {
		return nil, l.badUser(aerr)
	}
	sess, err := l.c.AuthenticateKey(l.ctx, l.agent, l.resource)
	if _, err := l.started(sess, err); err != nil {
		return nil, err
	}
	return perms, nil
}

// started finishes a login whose session start was recorded (or refused
// and recorded): it connects the target.
func (l *login) started(sess *proxy.Session, err error) (*ssh.Permissions, error) {
	l.decided = true
	l.recorded = true
	if err != nil {
		msg := err.Error()
		if ae, ok := proxy.AsAuthError(err); ok {
			l.lastErr = ae
			msg = ae.Msg
		}
		return nil, l.over(err, msg)
	}
	res := sess.Resource()
	t := l.p.targets[res.Name]
	var up *upstream
	if t == nil {
		err = fmt.Errorf("resource %s has no ssh target configured", res.Name)
	} else {
		up, err = t.dial(l.ctx, l.p.dialer)
	}
	if err != nil {
		rule := "upstream"
		var he *HostKeyMismatchError
		if errors.As(err, &he) {
			rule = "upstream-host-key"
		}
		msg := fmt.Sprintf("cannot connect to %s: %v", res.Name, err)
		sess.Refuse(authz.SingleVerdict(authz.Decision{
			Text: "connect " + res.User + "@" + res.Address, Rule: rule, Reason: msg,
			Class: authz.Classification{Kind: sshauthz.KindUpstream},
		}))
		sess.Logger().Error("upstream connection failed", "err", err)
		sess.End("upstream connection failed: " + err.Error())
		return nil, l.over(err, msg)
	}
	l.sess, l.up, l.target = sess, up, t
	return &ssh.Permissions{}, nil
}

// badUser refuses a user name that names no agent and ssh resource. No
// credential can succeed with it (OpenSSH keeps one user name per
// connection), so the connection ends after the banner rather than
// asking for another password.
func (l *login) badUser(aerr *proxy.AuthError) error {
	l.lastErr = aerr
	return l.over(aerr, aerr.Msg)
}

// over ends a login that was decided against the client (its session was
// refused at start, or its target could not be reached): the banner says
// why, then the connection is closed. A failure reply instead would have
// the client ask for another password, which no password can answer on
// this connection any more, and sshpass would report a wrong password.
func (l *login) over(err error, msg string) error {
	banner := "airlock: " + msg + "\r\n"
	if l.pre == nil || l.pre.SendAuthBanner(banner) != nil {
		return &ssh.BannerError{Err: err, Message: banner}
	}
	_ = l.c.Conn.Close()
	return err
}

// handshakeFailed records a connection that ended without a session: one
// auth.failed with the last reason, or the handshake error for a client
// that never got as far as a login attempt.
func (l *login) handshakeFailed(err error) {
	if l.recorded {
		return
	}
	aerr := l.lastErr
	if aerr == nil {
		why := err.Error()
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			why = "the client closed the connection before logging in"
		case isTimeout(err):
			why = "no login within " + l.p.handshakeTimeout.String()
		default:
			var se *ssh.ServerAuthError
			if errors.As(err, &se) {
				why = "the client gave up without a usable credential"
			}
		}
		aerr = &proxy.AuthError{Kind: "protocol", Msg: "ssh handshake failed: " + why}
	}
	who := l.agent
	if who == "" {
		who = l.user
	}
	l.c.Refuse(who, l.resource, l.grant, aerr)
	l.recorded = true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
