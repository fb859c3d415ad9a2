// Package ssh is airlock's SSH listener: it terminates the agent's SSH
// connection (golang.org/x/crypto/ssh), authenticates it with a grant
// token or a registered public key, connects to the resource as the
// gateway's own user with a pinned host key, and relays the connection
// request by request: every exec, shell, subsystem, forward and SFTP
// operation is authorized against the grant and recorded before it reaches
// the target; terminal sessions are recorded for replay.
//
// One file per phase: login (auth.go), the connection and its global
// requests (conn.go), session channels (session.go), data recording
// (record.go), SFTP (sftp.go for the codec, sftprelay.go for the policy),
// port forwarding (forward.go), the target (upstream.go).
package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/proxy"
)

// Protocol serves SSH clients.
type Protocol struct {
	cfg     *config.Config
	hostKey ssh.Signer
	targets map[string]*target
	// agentKeys are the registered public keys of each agent, in wire
	// form.
	agentKeys map[string][][]byte
	dialer    *net.Dialer
	// maxOutput caps the recorded data of an exec channel.
	maxOutput int64
	// window is how many bytes of channel data may be relayed before their
	// events are acknowledged.
	window int64
	// handshakeTimeout bounds the handshake and login
	// (limits.login_timeout).
	handshakeTimeout time.Duration
	// keepalive is how long an agent's connection may stay silent before
	// it must answer a keepalive, and how long it has to answer
	// (limits.message_timeout).
	keepalive time.Duration
}

// New reads the host key and every ssh resource's credentials and host
// keys, so a bad file fails the gateway's start with the config key named.
func New(cfg *config.Config, log *slog.Logger) (*Protocol, error) {
	hk, err := LoadHostKey(cfg.Listen.SSHHostKeyFile, cfg.DataDir)
	if err != nil {
		if cfg.Listen.SSHHostKeyFile != "" {
			return nil, fmt.Errorf("config: listen.ssh_host_key_file: %w", err)
		}
		return nil, err
	}
	p := &Protocol{
		cfg:              cfg,
		hostKey:          hk,
		targets:          map[string]*target{},
		agentKeys:        map[string][][]byte{},
		dialer:           &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second},
		maxOutput:        cfg.Recorder.MaxOutputBytes,
		window:           64 << 10,
		handshakeTimeout: cfg.Limits.LoginTimeout,
		keepalive:        cfg.Limits.MessageTimeout,
	}
	if p.maxOutput <= 0 {
		p.maxOutput = 1 << 20
	}
	if p.handshakeTimeout <= 0 {
		p.handshakeTimeout = 60 * time.Second
	}
	if p.keepalive <= 0 {
		p.keepalive = 30 * time.Second
	}
	for i := range cfg.Resources {
		r := &cfg.Resources[i]
		if r.Protocol != "ssh" {
			continue
		}
		t, err := loadTarget(r, fmt.Sprintf("resources[%d]", i))
		if err != nil {
			return nil, err
		}
		p.targets[r.Name] = t
	}
	for i, id := range cfg.Identities {
		for j, k := range id.SSHPublicKeys {
			pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
			if err != nil {
				return nil, fmt.Errorf("config: identities[%d].ssh_public_keys[%d]: %v", i, j, err)
			}
			p.agentKeys[id.Name] = append(p.agentKeys[id.Name], pk.Marshal())
		}
	}
	log.Info("SSH host key", "proto", "ssh", "type", hk.PublicKey().Type(), "fingerprint", ssh.FingerprintSHA256(hk.PublicKey()))
	return p, nil
}

// HostKey is the gateway's SSH host public key.
func (p *Protocol) HostKey() ssh.PublicKey { return p.hostKey.PublicKey() }

// Name implements proxy.Protocol.
func (p *Protocol) Name() string { return "ssh" }

// Serve implements proxy.Protocol.
func (p *Protocol) Serve(ctx context.Context, c *proxy.Conn) {
	log := c.Logger()
	_ = c.SetDeadline(time.Now().Add(p.handshakeTimeout))
	l := &login{p: p, c: c, ctx: ctx}
	vc := &versionCheck{Conn: c.Conn}
	sc, chans, reqs, err := ssh.NewServerConn(vc, p.serverConfig(l))
	if err != nil {
		if !vc.sent {
			// A connection that sent nothing (a port probe, a load
			// balancer's health check) attempted nothing to record, as
			// the Postgres listener treats one that closes at startup.
			log.Debug("connection closed before the SSH version", "err", err)
			return
		}
		l.handshakeFailed(err)
		return
	}
	_ = c.SetDeadline(time.Time{})
	if l.sess == nil || l.up == nil {
		// Cannot happen: every accepting callback sets both.
		log.Error("ssh login accepted without a session")
		sc.Close()
		return
	}
	cn := newConn(p, l.sess, sc, l.up, l.target)
	reason := cn.run(chans, reqs)
	l.sess.End(reason)
}

func (p *Protocol) serverConfig(l *login) *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		PasswordCallback:            l.password,
		KeyboardInteractiveCallback: l.keyboardInteractive,
		PublicKeyCallback:           l.publicKey,
		VerifiedPublicKeyCallback:   l.verifiedPublicKey,
		PreAuthConnCallback:         func(c ssh.ServerPreAuthConn) { l.pre = c },
		ServerVersion:               "SSH-2.0-airlock",
		MaxAuthTries:                6,
	}
	cfg.Ciphers = config.DefaultSSHCiphers
	if len(p.cfg.Listen.SSHCiphers) > 0 {
		cfg.Ciphers = p.cfg.Listen.SSHCiphers
	}
	cfg.AddHostKey(p.hostKey)
	return cfg
}

// upstreamCiphers put AES-GCM first for the same reason, keeping
// chacha20-poly1305 for targets that offer nothing else.
var upstreamCiphers = []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr"}

// errLoginOver refuses attempts after a login was decided on this
// connection (a session started, or its upstream failed).
var errLoginOver = errors.New("airlock: this connection's login is already decided")

// versionCheck fails the handshake at once when the client's first bytes
// are not an SSH version string: x/crypto would skip lines that are not
// one (as a client may skip a server's) and wait out the timeout, but a
// client must start with its version (RFC 4253 section 4.2).
type versionCheck struct {
	net.Conn
	checked bool
	sent    bool // the client sent at least one byte
	pre     []byte
}

func (v *versionCheck) Read(b []byte) (int, error) {
	if !v.checked {
		v.checked = true
		h := make([]byte, 4)
		n, err := io.ReadFull(v.Conn, h)
		v.sent = n > 0
		if err != nil {
			return 0, err
		}
		if string(h) != "SSH-" {
			return 0, fmt.Errorf("not an SSH client: its first bytes are %q", h)
		}
		v.pre = h
	}
	if len(v.pre) > 0 {
		n := copy(b, v.pre)
		v.pre = v.pre[n:]
		return n, nil
	}
	return v.Conn.Read(b)
}
