package postgres

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"net"
	"sync"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/proxy"
	"github.com/airlockhq/airlock/recorder"
)

// cancelTarget is the upstream backend behind a backend key the gateway
// handed to a client.
type cancelTarget struct {
	sess      *proxy.Session
	addr      string
	pid       uint32
	key       []byte
	clientPID uint32
	clientKey []byte
}

// cancels maps the gateway's backend keys (by process id) to upstream
// backends. A client's CancelRequest arrives on a new connection that
// carries only the key, so this map is the only link back to its session.
type cancels struct {
	mu sync.Mutex
	m  map[uint32]*cancelTarget
}

// add gives t a fresh process id and key for the client, unique among
// live sessions, and registers it until remove is called.
func (c *cancels) add(t *cancelTarget) (remove func()) {
	t.clientKey = make([]byte, 4)
	_, _ = rand.Read(t.clientKey)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[uint32]*cancelTarget{}
	}
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		t.clientPID = binary.BigEndian.Uint32(b[:]) & 0x7fffffff
		if _, taken := c.m[t.clientPID]; !taken && t.clientPID != 0 {
			break
		}
	}
	c.m[t.clientPID] = t
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.m[t.clientPID] == t {
			delete(c.m, t.clientPID)
		}
	}
}

func (c *cancels) find(pid uint32, key []byte) *cancelTarget {
	c.mu.Lock()
	t := c.m[pid]
	c.mu.Unlock()
	if t == nil || subtle.ConstantTimeCompare(t.clientKey, key) != 1 {
		return nil
	}
	return t
}

// cancelRequest handles a CancelRequest packet (body after the length):
// if it names one of our sessions, the request is recorded in that session
// and passed to the upstream backend with the upstream's own key.
func (p *Protocol) cancelRequest(body []byte, c *proxy.Conn) {
	if len(body) < 12 {
		return
	}
	pid := binary.BigEndian.Uint32(body[4:8])
	t := p.cancels.find(pid, body[8:])
	if t == nil {
		c.Logger().Info("cancel request for no known session")
		return
	}
	if t.sess.CancelHold() {
		// The statement is waiting for an approver, not running: the
		// wait ends, recorded as hold-cancelled, and the client gets
		// 57014 as from a cancelled statement.
		return
	}
	adm, err := t.sess.Admit(authz.Verdict{Allow: true, Statements: []authz.Decision{{
		Text: "<cancel request from " + c.Remote + ">", Allow: true, Rule: "cancel",
		Class: authz.Classification{Kind: "CANCEL", Required: authz.AccessRead},
	}}})
	if err != nil {
		t.sess.Logger().Warn("cancel request not recorded; not forwarded", "err", err)
		return
	}
	err = sendCancel(t.addr, t.pid, t.key)
	res := recorder.Result{Executed: err == nil}
	if err != nil {
		res.Error = "cancel not delivered: " + err.Error()
	}
	adm.Done(0, res)
}

// sendCancel delivers a CancelRequest to a PostgreSQL server. Servers take
// it in the clear on a fresh connection and answer nothing.
func sendCancel(addr string, pid uint32, key []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	pkt := make([]byte, 12, 12+len(key))
	binary.BigEndian.PutUint32(pkt[0:4], uint32(12+len(key)))
	binary.BigEndian.PutUint32(pkt[4:8], codeCancelRequest)
	binary.BigEndian.PutUint32(pkt[8:12], pid)
	pkt = append(pkt, key...)
	if _, err := conn.Write(pkt); err != nil {
		return err
	}
	// Wait for the server to close, so the cancel has been read.
	var b [1]byte
	_, _ = conn.Read(b[:])
	return nil
}
