package ssh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/authz"
	sshauthz "github.com/airlockhq/airlock/authz/ssh"
	"github.com/airlockhq/airlock/recorder"
)

// Port forwarding. A direct-tcpip channel (ssh -L, -W, ProxyJump) is
// opened by the target, so the destination is reached from the target's
// network, as it would be without airlock; a tcpip-forward (ssh -R) makes
// the target listen. Both need the destination in the grant's --forward
// entries. What flows through a forward is counted, not recorded.

type (
	directTCPIPMsg struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	tcpipForwardMsg struct {
		Addr string
		Port uint32
	}
	forwardedTCPIPMsg struct {
		Addr     string
		Port     uint32
		OrigAddr string
		OrigPort uint32
	}
)

func (c *conn) protocolError(what string, n int) string {
	return c.refuse(authz.Decision{
		Text: what, Rule: "protocol",
		Reason: fmt.Sprintf("malformed %s (%d bytes)", what, n),
		Class:  authz.Classification{Kind: sshauthz.KindProtocolError},
	})
}

func (c *conn) directTCPIP(nc ssh.NewChannel) {
	var m directTCPIPMsg
	if err := ssh.Unmarshal(nc.ExtraData(), &m); err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, c.protocolError("direct-tcpip channel", len(nc.ExtraData())))
		return
	}
	d := sshauthz.AuthorizeForward(c.sess.Grant(), safeText([]byte(m.Host)), m.Port)
	d.Text += fmt.Sprintf(" (from %s:%d)", safeText([]byte(m.OrigHost)), m.OrigPort)
	adm, err := c.sess.Admit(authz.SingleVerdict(d))
	if err != nil {
		_ = nc.Reject(ssh.Prohibited, err.Error())
		return
	}
	upCh, upReqs, err := c.up.conn.OpenChannel("direct-tcpip", nc.ExtraData())
	if err != nil {
		reason, msg := ssh.ConnectionFailed, err.Error()
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) {
			reason, msg = oe.Reason, oe.Message
		}
		adm.Done(0, recorder.Result{Executed: true, Error: "the target could not connect: " + msg})
		_ = nc.Reject(reason, "airlock: the target could not connect: "+msg)
		return
	}
	go ssh.DiscardRequests(upReqs)
	ch, reqs, err := nc.Accept()
	if err != nil {
		upCh.Close()
		adm.Done(0, recorder.Result{Executed: true, Error: "the agent's side failed: " + err.Error()})
		return
	}
	go ssh.DiscardRequests(reqs)
	in, out := pipe(ch, upCh)
	adm.Done(0, recorder.Result{Executed: true, BytesIn: in, BytesOut: out})
}

func listenKey(addr string, port uint32) string { return fmt.Sprintf("%s:%d", addr, port) }

func (c *conn) tcpipForward(r *ssh.Request) {
	var m tcpipForwardMsg
	if err := ssh.Unmarshal(r.Payload, &m); err != nil {
		c.protocolError("tcpip-forward request", len(r.Payload))
		_ = r.Reply(false, nil)
		return
	}
	d := sshauthz.AuthorizeListen(c.sess.Grant(), safeText([]byte(m.Addr)), m.Port)
	adm, err := c.sess.Admit(authz.SingleVerdict(d))
	if err != nil {
		_ = r.Reply(false, nil)
		return
	}
	ok, payload, err := c.up.conn.SendRequest("tcpip-forward", true, r.Payload)
	if err != nil || !ok {
		adm.Done(0, recorder.Result{Executed: true, Error: "the target refused to listen"})
		_ = r.Reply(false, nil)
		return
	}
	port := m.Port
	if port == 0 && len(payload) >= 4 {
		port = binary.BigEndian.Uint32(payload)
	}
	c.mu.Lock()
	c.listens[listenKey(m.Addr, port)] = true
	c.mu.Unlock()
	adm.Done(0, recorder.Result{Executed: true, Tag: "listening on " + listenKey(safeText([]byte(m.Addr)), port)})
	_ = r.Reply(true, payload)
}

func (c *conn) cancelTCPIPForward(r *ssh.Request) {
	var m tcpipForwardMsg
	if err := ssh.Unmarshal(r.Payload, &m); err != nil {
		_ = r.Reply(false, nil)
		return
	}
	key := listenKey(m.Addr, m.Port)
	c.mu.Lock()
	ok := c.listens[key]
	delete(c.listens, key)
	c.mu.Unlock()
	if ok {
		ok, _, _ = c.up.conn.SendRequest("cancel-tcpip-forward", true, r.Payload)
	}
	_ = r.Reply(ok, nil)
}

// forwardedTCPIP passes a connection the target accepted on an allowed
// remote forward to the agent.
func (c *conn) forwardedTCPIP(nc ssh.NewChannel) {
	var m forwardedTCPIPMsg
	if ssh.Unmarshal(nc.ExtraData(), &m) != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "airlock: malformed forwarded-tcpip channel")
		return
	}
	c.mu.Lock()
	ok := c.listens[listenKey(m.Addr, m.Port)]
	c.mu.Unlock()
	if !ok {
		_ = nc.Reject(ssh.Prohibited, "airlock: no such forward")
		return
	}
	d := sshauthz.AuthorizeListen(c.sess.Grant(), safeText([]byte(m.Addr)), m.Port)
	d.Text = fmt.Sprintf("forwarded-tcpip %s from %s:%d", listenKey(safeText([]byte(m.Addr)), m.Port), safeText([]byte(m.OrigAddr)), m.OrigPort)
	adm, err := c.sess.Admit(authz.SingleVerdict(d))
	if err != nil {
		_ = nc.Reject(ssh.Prohibited, err.Error())
		return
	}
	ch, reqs, err := c.sc.OpenChannel("forwarded-tcpip", nc.ExtraData())
	if err != nil {
		adm.Done(0, recorder.Result{Executed: false, Error: "the agent refused the channel: " + err.Error()})
		_ = nc.Reject(ssh.ConnectionFailed, "airlock: the agent refused the channel")
		return
	}
	go ssh.DiscardRequests(reqs)
	upCh, upReqs, err := nc.Accept()
	if err != nil {
		ch.Close()
		adm.Done(0, recorder.Result{Executed: false, Error: err.Error()})
		return
	}
	go ssh.DiscardRequests(upReqs)
	out, in := pipe(upCh, ch)
	adm.Done(0, recorder.Result{Executed: true, BytesIn: in, BytesOut: out})
}

// pipe copies a to b and b to a until both directions end, passing EOF
// on, and returns the byte counts (a to b, b to a).
func pipe(a, b ssh.Channel) (ab, ba int64) {
	var n1, n2 atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src ssh.Channel, n *atomic.Int64) {
		defer wg.Done()
		c, _ := io.Copy(dst, src)
		n.Store(c)
		_ = dst.CloseWrite()
	}
	go cp(b, a, &n1)
	go cp(a, b, &n2)
	wg.Wait()
	a.Close()
	b.Close()
	return n1.Load(), n2.Load()
}
