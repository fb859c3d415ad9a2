package ssh

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/authz"
	sshauthz "github.com/airlockhq/airlock/authz/ssh"
	"github.com/airlockhq/airlock/proxy"
)

// maxChannels bounds the channels one connection may have open at once.
const maxChannels = 64

// conn is an authenticated agent connection and its target connection.
// It owns both: one end closes both, and the session is ended only after
// every channel has recorded its outcome.
type conn struct {
	p    *Protocol
	sess *proxy.Session
	sc   *ssh.ServerConn
	up   *upstream
	t    *target
	log  *slog.Logger

	handlers sync.WaitGroup // channel and request handlers
	// done is closed when both connections are (Close).
	done chan struct{}
	// chans and reqs are the agent's, for Run.
	chans <-chan ssh.NewChannel
	reqs  <-chan *ssh.Request

	mu       sync.Mutex
	channels map[*sessionChan]struct{}
	open     int
	// listens are the tcpip-forward addresses the agent was allowed, as
	// the target reports them back in forwarded-tcpip channels.
	listens map[string]bool
}

func newConn(p *Protocol, sess *proxy.Session, sc *ssh.ServerConn, up *upstream, t *target) *conn {
	return &conn{
		p: p, sess: sess, sc: sc, up: up, t: t,
		log:      sess.Logger(),
		done:     make(chan struct{}),
		channels: map[*sessionChan]struct{}{},
		listens:  map[string]bool{},
	}
}

// run relays the connection until either side closes or the session must
// end, and returns why it ended, once every channel has recorded its
// outcome.
func (c *conn) run(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) string {
	c.chans, c.reqs = chans, reqs
	reason := c.sess.Relay(c)
	c.handlers.Wait()
	return reason
}

// Run implements proxy.Relay.
func (c *conn) Run() string {
	c.goHandle(func() { c.globalRequests(c.reqs) })
	c.goHandle(c.targetRequests)
	c.goHandle(c.targetChannels)
	go c.keepalive()
	go func() {
		err := c.up.conn.Wait()
		why := "target closed the connection"
		if err != nil && !isClosedErr(err) {
			why += ": " + err.Error()
		}
		c.end(why)
	}()
	for nc := range c.chans {
		c.goHandle(func() { c.channel(nc) })
	}
	// The agent's connection is gone (or was closed by end).
	return "agent disconnected"
}

// Terminate implements proxy.Relay: each running command's agent is told
// why on its stderr.
func (c *conn) Terminate(msg string) {
	c.tellAll("airlock: session ended: " + msg)
}

// Close implements proxy.Relay.
func (c *conn) Close() {
	close(c.done)
	c.sc.Close()
	c.up.conn.Close()
}

func (c *conn) goHandle(f func()) {
	c.handlers.Add(1)
	go func() {
		defer c.handlers.Done()
		f()
	}()
}

// end closes both connections once; the first reason counts.
func (c *conn) end(why string) { c.sess.Stop(why) }

// keepalive asks the agent's client for a reply every p.keepalive and
// ends the connection when none comes within p.keepalive, as OpenSSH's
// ClientAliveInterval does. A client that stopped in the middle of a
// packet cannot answer, so this is the SSH listener's bound on a stalled
// message (limits.message_timeout); x/crypto/ssh reads packets itself.
// Clients answer the unknown request with a failure, which is an answer.
func (c *conn) keepalive() {
	t := time.NewTicker(c.p.keepalive)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		answered := make(chan struct{})
		go func() {
			_, _, _ = c.sc.SendRequest("keepalive@openssh.com", true, nil)
			close(answered)
		}()
		wait := time.NewTimer(c.p.keepalive)
		select {
		case <-answered:
			wait.Stop()
		case <-c.done:
			wait.Stop()
			return
		case <-wait.C:
			c.end("agent stopped answering: no reply to a keepalive within " + c.p.keepalive.String() + " (limits.message_timeout)")
			return
		}
	}
}

// endReason is why the connection ended, or "" while it runs.
func (c *conn) endReason() string {
	select {
	case <-c.done:
		return c.sess.StopReason()
	default:
		return ""
	}
}

// recorderLost ends the connection because what it relays can no longer
// be recorded: strict mode ends the session rather than go on unrecorded.
func (c *conn) recorderLost(err error) {
	c.log.Error("recording unavailable mid-session; ending the session", "err", err)
	c.tellAll("airlock: recording unavailable; session ended (airlock runs nothing it cannot record)")
	c.end("recording unavailable: " + err.Error())
}

// tellAll writes msg on the stderr of every running session channel,
// waiting at most a second: an agent that reads nothing must not hold up
// the end.
func (c *conn) tellAll(msg string) {
	c.mu.Lock()
	var chs []*sessionChan
	for s := range c.channels {
		chs = append(chs, s)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range chs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.notify(msg)
		}()
	}
	waitTimeout(&wg, time.Second)
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// refuse records a refused request and returns the message for the agent.
func (c *conn) refuse(d authz.Decision) string {
	d.Allow = false
	return c.sess.Refuse(authz.SingleVerdict(d)).Msg
}

// channel dispatches a channel the agent opens.
func (c *conn) channel(nc ssh.NewChannel) {
	c.mu.Lock()
	full := c.open >= maxChannels
	if !full {
		c.open++
	}
	c.mu.Unlock()
	if full {
		_ = nc.Reject(ssh.ResourceShortage, fmt.Sprintf("airlock: at most %d channels per connection", maxChannels))
		return
	}
	defer func() {
		c.mu.Lock()
		c.open--
		c.mu.Unlock()
	}()
	switch typ := nc.ChannelType(); typ {
	case "session":
		c.session(nc)
	case "direct-tcpip":
		c.directTCPIP(nc)
	case "direct-streamlocal@openssh.com":
		msg := c.refuse(sshauthz.Refuse(sshauthz.KindDirectTCPIP, "direct-streamlocal", "forwarding to Unix sockets is not supported through airlock"))
		_ = nc.Reject(ssh.Prohibited, msg)
	case "x11":
		msg := c.refuse(sshauthz.Refuse(sshauthz.KindX11, "x11 channel", "X11 forwarding is not allowed through airlock"))
		_ = nc.Reject(ssh.Prohibited, msg)
	case "auth-agent@openssh.com":
		msg := c.refuse(sshauthz.Refuse(sshauthz.KindAgentForward, "agent channel", "agent forwarding is not allowed through airlock"))
		_ = nc.Reject(ssh.Prohibited, msg)
	default:
		msg := c.refuse(sshauthz.Refuse(sshauthz.KindOtherRequest, "channel "+safeText([]byte(typ)), fmt.Sprintf("channel type %q is not supported through airlock", typ)))
		_ = nc.Reject(ssh.UnknownChannelType, msg)
	}
}

// globalRequests answers the agent's connection-level requests.
func (c *conn) globalRequests(reqs <-chan *ssh.Request) {
	for r := range reqs {
		switch r.Type {
		case "tcpip-forward":
			c.tcpipForward(r)
		case "cancel-tcpip-forward":
			c.cancelTCPIPForward(r)
		case "keepalive@openssh.com", "no-more-sessions@openssh.com":
			// Not requests for access: a keepalive only wants an answer.
			_ = r.Reply(false, nil)
		case "streamlocal-forward@openssh.com":
			c.refuse(sshauthz.Refuse(sshauthz.KindTCPIPForward, "streamlocal-forward", "forwarding from Unix sockets is not supported through airlock"))
			_ = r.Reply(false, nil)
		default:
			c.refuse(sshauthz.Refuse(sshauthz.KindOtherRequest, "global request "+safeText([]byte(r.Type)), fmt.Sprintf("global request %q is not supported through airlock", r.Type)))
			_ = r.Reply(false, nil)
		}
	}
}

// targetRequests answers the target's connection-level requests (host key
// announcements, keepalives): none is passed to the agent.
func (c *conn) targetRequests() {
	for r := range c.up.reqs {
		if r.WantReply {
			_ = r.Reply(false, nil)
		}
	}
}

// targetChannels takes channels the target opens: only forwarded-tcpip,
// for a remote forward the agent was allowed.
func (c *conn) targetChannels() {
	for nc := range c.up.chans {
		if nc.ChannelType() != "forwarded-tcpip" {
			_ = nc.Reject(ssh.Prohibited, "airlock: channel type not accepted from the target")
			continue
		}
		c.goHandle(func() { c.forwardedTCPIP(nc) })
	}
}

func (c *conn) track(s *sessionChan) {
	c.mu.Lock()
	c.channels[s] = struct{}{}
	c.mu.Unlock()
}

func (c *conn) untrack(s *sessionChan) {
	c.mu.Lock()
	delete(c.channels, s)
	c.mu.Unlock()
}
