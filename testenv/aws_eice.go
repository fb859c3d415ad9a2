package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// EICE is an emulated EC2 Instance Connect Endpoint: a TLS websocket
// server whose openTunnel URL must be presigned with SigV4 by a principal
// allowed ec2-instance-connect:OpenTunnel, and which tunnels only to the
// addresses of its subnet.
type EICE struct {
	ID string
	// DNSName is what DescribeInstanceConnectEndpoints answers and the URL
	// is built on (host:port here; a name on AWS).
	DNSName string
	a       *AWS
	targets map[string]bool
}

// AddEICE starts an EC2 Instance Connect Endpoint with id that reaches the
// targets (host:port, the instances' private addresses and ports).
func (a *AWS) AddEICE(t testing.TB, id string, targets ...string) *EICE {
	t.Helper()
	ln := a.listenTLS(t)
	e := &EICE{ID: id, DNSName: ln.Addr().String(), a: a, targets: map[string]bool{}}
	for _, tg := range targets {
		e.targets[tg] = true
	}
	srv := &http.Server{Handler: http.HandlerFunc(e.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	a.mu.Lock()
	a.eices[id] = e
	a.mu.Unlock()
	return e
}

func (e *EICE) refuse(w http.ResponseWriter, status int, code, msg string) {
	e.a.logCall("ec2-instance-connect:OpenTunnel %s: refused: %s: %s", e.ID, code, msg)
	w.Header().Set("X-Amzn-ErrorType", code)
	http.Error(w, code+": "+msg, status)
}

func (e *EICE) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/openTunnel" {
		http.NotFound(w, r)
		return
	}
	p, err := e.a.verifyPresigned(r.Host, r.URL.Path, r.URL.Query())
	if err != nil {
		code := "SignatureDoesNotMatch"
		if se, ok := err.(*sigError); ok {
			code = se.code
		}
		e.refuse(w, http.StatusForbidden, code, err.Error())
		return
	}
	if p.service != "ec2-instance-connect" || p.region != e.a.Region {
		e.refuse(w, http.StatusForbidden, "SignatureDoesNotMatch", fmt.Sprintf("signed for %s in %s, this is ec2-instance-connect in %s", p.service, p.region, e.a.Region))
		return
	}
	if p.expires > time.Hour {
		e.refuse(w, http.StatusBadRequest, "InvalidParameter", "X-Amz-Expires is over an hour")
		return
	}
	q := p.query
	if q.Get("instanceConnectEndpointId") != e.ID {
		e.refuse(w, http.StatusBadRequest, "InvalidParameter", fmt.Sprintf("instanceConnectEndpointId %q is not this endpoint (%s)", q.Get("instanceConnectEndpointId"), e.ID))
		return
	}
	maxDur := time.Hour
	if s := q.Get("maxTunnelDuration"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 3600 {
			e.refuse(w, http.StatusBadRequest, "InvalidParameter", "maxTunnelDuration must be 1..3600")
			return
		}
		maxDur = time.Duration(n) * time.Second
	}
	target := net.JoinHostPort(q.Get("privateIpAddress"), q.Get("remotePort"))
	if code := e.a.check("ec2-instance-connect:OpenTunnel"); code != "" {
		if code == "Throttling" {
			e.refuse(w, http.StatusTooManyRequests, "ThrottlingException", "Rate exceeded")
			return
		}
		e.refuse(w, http.StatusForbidden, "AccessDeniedException", fmt.Sprintf("User: %s is not authorized to perform: ec2-instance-connect:OpenTunnel on resource: arn:aws:ec2:%s:%s:instance-connect-endpoint/%s", p.arn, e.a.Region, e.a.AccountID, e.ID))
		return
	}
	if !e.targets[target] {
		e.refuse(w, http.StatusBadRequest, "InvalidParameter", fmt.Sprintf("%s is not reachable from this endpoint's subnet", target))
		return
	}
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		e.refuse(w, http.StatusBadGateway, "ConnectionFailed", err.Error())
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		up.Close()
		return
	}
	e.a.logCall("ec2-instance-connect:OpenTunnel %s to %s: ok", e.ID, target)
	// The tunnel is the emulated endpoint's own: it ends when either side
	// closes or maxTunnelDuration passes, not with the HTTP request.
	ctx, cancel := context.WithTimeout(context.Background(), maxDur)
	defer cancel()
	nc := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(up, nc)
		_ = up.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(nc, up)
		nc.Close()
	}()
	stop := context.AfterFunc(ctx, func() { up.Close() })
	wg.Wait()
	stop()
	up.Close()
}
