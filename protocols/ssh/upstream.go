package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/airlockhq/airlock/config"
)

// target is how the gateway reaches one ssh resource: its credentials and
// the host keys it accepts, read once at start so a bad file fails the
// start, not a session.
type target struct {
	res    *config.Resource
	signer ssh.Signer // auth private_key
	// aws pushes the per-session key of an ec2-instance-connect resource
	// and opens EICE tunnels; set by UseAWS.
	aws InstanceConnect
	// pinned are the resource's host_key entries; known is the
	// known_hosts_file check. Either or both may be set.
	pinned []ssh.PublicKey
	known  ssh.HostKeyCallback
	algos  []string
}

// loadTarget reads what connecting to res needs. key names the resource
// in errors (resources[2]).
func loadTarget(res *config.Resource, key string) (*target, error) {
	t := &target{res: res}
	switch res.Auth.Type {
	case "private_key":
		b, err := os.ReadFile(res.Auth.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("config: %s.auth.key_file: %w", key, err)
		}
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("config: %s.auth.key_file: %s: %w (an unencrypted OpenSSH or PEM private key is needed)", key, res.Auth.KeyFile, err)
		}
		t.signer = s
	case "ec2-instance-connect":
		// A key is minted and pushed for each session (dial).
	default:
		return nil, fmt.Errorf("config: %s.auth.type: %q is not supported for ssh", key, res.Auth.Type)
	}
	for i, line := range strings.Split(strings.TrimSpace(res.HostKey), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("config: %s.host_key: line %d: %v (want the key as in known_hosts or a .pub file: \"ssh-ed25519 AAAA...\")", key, i+1, err)
		}
		t.pinned = append(t.pinned, pk)
		t.algos = append(t.algos, hostKeyAlgorithms(pk.Type())...)
	}
	if res.KnownHostsFile != "" {
		cb, err := knownhosts.New(res.KnownHostsFile)
		if err != nil {
			return nil, fmt.Errorf("config: %s.known_hosts_file: %w", key, err)
		}
		t.known = cb
		t.algos = nil // the file may hold any type
	}
	if len(t.pinned) == 0 && t.known == nil {
		return nil, fmt.Errorf("config: %s.host_key: required for ssh (or known_hosts_file): the gateway verifies the target's host key", key)
	}
	return t, nil
}

// hostKeyAlgorithms are the signature algorithms a host key of type typ
// can be offered with, so the handshake picks the pinned key rather than
// another key the server also has.
func hostKeyAlgorithms(typ string) []string {
	switch typ {
	case ssh.KeyAlgoRSA:
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	default:
		return []string{typ}
	}
}

// HostKeyMismatchError is a target whose host key is not the pinned one.
type HostKeyMismatchError struct {
	Resource, Addr string
	Got            ssh.PublicKey
	Want           []ssh.PublicKey
}

func (e *HostKeyMismatchError) Error() string {
	want := make([]string, len(e.Want))
	for i, k := range e.Want {
		want[i] = k.Type() + " " + ssh.FingerprintSHA256(k)
	}
	return fmt.Sprintf("host key mismatch for %s at %s: the target presented %s %s, the gateway pins %s (config host_key); refusing to connect",
		e.Resource, e.Addr, e.Got.Type(), ssh.FingerprintSHA256(e.Got), strings.Join(want, ", "))
}

func (t *target) checkHostKey(hostname string, remote net.Addr, key ssh.PublicKey) error {
	if len(t.pinned) > 0 {
		kb := key.Marshal()
		for _, pk := range t.pinned {
			if bytes.Equal(pk.Marshal(), kb) {
				return nil
			}
		}
		if t.known == nil {
			return &HostKeyMismatchError{Resource: t.res.Name, Addr: t.res.Address, Got: key, Want: t.pinned}
		}
	}
	if err := t.known(hostname, remote, key); err != nil {
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) && len(ke.Want) > 0 {
			want := make([]ssh.PublicKey, len(ke.Want))
			for i, k := range ke.Want {
				want[i] = k.Key
			}
			return &HostKeyMismatchError{Resource: t.res.Name, Addr: t.res.Address, Got: key, Want: want}
		}
		return fmt.Errorf("host key of %s at %s: %w (config known_hosts_file)", t.res.Name, t.res.Address, err)
	}
	return nil
}

// upstream is an authenticated connection to the target.
type upstream struct {
	conn  ssh.Conn
	chans <-chan ssh.NewChannel
	reqs  <-chan *ssh.Request
}

// InstanceConnect is what ec2-instance-connect resources need from AWS
// (awsauth.Provider).
type InstanceConnect interface {
	// PushKey makes a key for one session and pushes its public half to
	// the instance for the resource's user, valid for 60 seconds.
	PushKey(ctx context.Context, res *config.Resource) (ssh.Signer, error)
	// DialEICE opens a tunnel to the resource's address through its EC2
	// Instance Connect Endpoint.
	DialEICE(ctx context.Context, res *config.Resource) (net.Conn, error)
}

// UseAWS gives the ec2-instance-connect targets their AWS provider.
func (p *Protocol) UseAWS(a InstanceConnect) {
	for _, t := range p.targets {
		t.aws = a
	}
}

// dial connects to the target as its configured user.
func (t *target) dial(ctx context.Context, d *net.Dialer) (*upstream, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var auth []ssh.AuthMethod
	dialTCP := func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", t.res.Address) }
	switch t.res.Auth.Type {
	case "private_key":
		auth = []ssh.AuthMethod{ssh.PublicKeys(t.signer)}
	case "ec2-instance-connect":
		if t.aws == nil {
			return nil, fmt.Errorf("resource %s: the gateway has no AWS provider for auth type ec2-instance-connect", t.res.Name)
		}
		signer, err := t.aws.PushKey(ctx, t.res)
		if err != nil {
			return nil, err
		}
		auth = []ssh.AuthMethod{ssh.PublicKeys(signer)}
		if t.res.Auth.Endpoint != nil {
			dialTCP = func(ctx context.Context) (net.Conn, error) { return t.aws.DialEICE(ctx, t.res) }
		}
	default:
		return nil, fmt.Errorf("auth type %q is not supported for ssh", t.res.Auth.Type)
	}
	cfg := &ssh.ClientConfig{
		User:              t.res.User,
		Auth:              auth,
		HostKeyCallback:   t.checkHostKey,
		HostKeyAlgorithms: t.algos,
		ClientVersion:     "SSH-2.0-airlock",
	}
	cfg.Ciphers = upstreamCiphers
	nc, err := dialTCP(ctx)
	if err != nil {
		return nil, err
	}
	// The handshake takes no context; the deadline bounds it and ctx's
	// end closes the socket.
	dl, _ := ctx.Deadline()
	_ = nc.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	c, chans, reqs, err := ssh.NewClientConn(nc, t.res.Address, cfg)
	if !stop() {
		if err == nil {
			c.Close()
		}
		return nil, fmt.Errorf("connecting to %s: %w", t.res.Address, context.Cause(ctx))
	}
	if err != nil {
		nc.Close()
		var he *HostKeyMismatchError
		if errors.As(err, &he) {
			return nil, he
		}
		if t.res.Auth.Type == "ec2-instance-connect" && strings.Contains(err.Error(), "unable to authenticate") {
			return nil, fmt.Errorf("ssh to %s@%s: the instance refused the key pushed with EC2 Instance Connect: "+
				"it must run the EC2 Instance Connect agent (its sshd's AuthorizedKeysCommand), user %s must exist there, "+
				"and a pushed key is valid only 60 seconds (%w)", t.res.User, t.res.Address, t.res.User, err)
		}
		return nil, fmt.Errorf("ssh to %s@%s: %w", t.res.User, t.res.Address, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return &upstream{conn: c, chans: chans, reqs: reqs}, nil
}
