package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// AWS emulates the parts of AWS the gateway uses, checking what real AWS
// checks: every API request's SigV4 signature is recomputed with the
// emulator's credentials (aws-sdk-go-v2's signer), RDS tokens and EC2
// Instance Connect Endpoint URLs are verified as presigned requests, and
// times are judged by Clock, which tests move instead of sleeping. Behind
// the emulated endpoints are real servers: an RDS front relays to a real
// PostgreSQL or MariaDB with that server's own credentials; pushed SSH
// keys are served to a real sshd's AuthorizedKeysCommand; an EICE
// endpoint tunnels to a real sshd.
//
// The API endpoint (URL) serves STS AssumeRole, EC2
// DescribeInstanceConnectEndpoints and EC2 Instance Connect
// SendSSHPublicKey over TLS signed by the emulator's CA (CAFile).
type AWS struct {
	Region    string
	AccountID string
	// AccessKeyID and SecretAccessKey are the identity the gateway is
	// given (Env).
	AccessKeyID     string
	SecretAccessKey string
	// URL is the API endpoint, for aws.endpoint_url.
	URL string
	// CAFile is the PEM of the CA that signed every emulator's
	// certificate (valid for 127.0.0.1 and localhost), for aws.ca_file
	// and the RDS resources' tls.ca_file.
	CAFile string
	// Clock is the emulated AWS's time.
	Clock *Clock

	dir     string
	tlsCert tls.Certificate
	keysURL string // the instance-side key service

	mu        sync.Mutex
	creds     map[string]awsCred // access key id -> secret
	roles     map[string]bool    // role ARNs the base identity may assume
	denied    map[string]bool    // IAM actions denied to every principal
	throttled map[string]int     // IAM action -> requests still to throttle
	instances map[string]*awsInstance
	eices     map[string]*EICE
	keys      []pushedKey
	calls     []string
	// afterPush moves Clock after each SendSSHPublicKey, to emulate a
	// login that comes late.
	afterPush time.Duration
}

type awsCred struct {
	secret, sessionToken, arn string
	expires                   time.Time // zero: long-term key
}

type awsInstance struct{ id, az string }

type pushedKey struct {
	instance, user, key string
	at                  time.Time
}

// Clock is a settable clock: Now is the real time plus an offset that
// tests move with Advance.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward by d (backward when negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// Reset puts the clock back on real time.
func (c *Clock) Reset() {
	c.mu.Lock()
	c.offset = 0
	c.mu.Unlock()
}

// AWSOptions configures StartAWS.
type AWSOptions struct {
	// Region is the emulated region; default us-east-1.
	Region string
}

// KeyValidity is how long a key pushed with SendSSHPublicKey stays on the
// instance.
const KeyValidity = 60 * time.Second

// StartAWS starts the API endpoint and the instance-side key service.
// t.Cleanup stops them.
func StartAWS(t testing.TB, o AWSOptions) *AWS {
	t.Helper()
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	a := &AWS{
		Region: o.Region, AccountID: "123456789012",
		AccessKeyID: "AKIA" + strings.ToUpper(randomHex(8)), SecretAccessKey: randomHex(20),
		Clock: &Clock{}, dir: t.TempDir(),
		creds: map[string]awsCred{}, roles: map[string]bool{}, denied: map[string]bool{}, throttled: map[string]int{},
		instances: map[string]*awsInstance{}, eices: map[string]*EICE{},
	}
	a.creds[a.AccessKeyID] = awsCred{secret: a.SecretAccessKey, arn: "arn:aws:iam::" + a.AccountID + ":user/airlock-gateway"}
	a.makeCA(t)
	ln := a.listenTLS(t)
	a.URL = "https://" + ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(a.serveAPI), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	kl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: aws: %v", err)
	}
	a.keysURL = "http://" + kl.Addr().String()
	ks := &http.Server{Handler: http.HandlerFunc(a.serveKeys), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = ks.Serve(kl) }()
	t.Cleanup(func() { ks.Close() })
	return a
}

// Env is the environment that gives a gateway the emulator's identity and
// keeps the SDK away from anything else: no shared config files, no
// instance metadata service.
func (a *AWS) Env() []string {
	return append(AWSIsolatedEnv(a.dir), "AWS_ACCESS_KEY_ID="+a.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+a.SecretAccessKey)
}

// AWSIsolatedEnv is an environment in which the AWS SDK's default chain
// finds no credentials: every source it reads is emptied or pointed at
// nothing, and the instance metadata service is off (so nothing reaches
// for 169.254.169.254). dir is a directory for the empty config files.
func AWSIsolatedEnv(dir string) []string {
	none := filepath.Join(dir, "no-such-aws-file")
	return []string{
		"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=", "AWS_PROFILE=", "AWS_DEFAULT_PROFILE=",
		"AWS_CONFIG_FILE=" + none, "AWS_SHARED_CREDENTIALS_FILE=" + none,
		"AWS_WEB_IDENTITY_TOKEN_FILE=", "AWS_ROLE_ARN=", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI=", "AWS_EC2_METADATA_DISABLED=true", "AWS_ENDPOINT_URL=",
	}
}

// AddRole lets the base identity assume role (an ARN) with sts:AssumeRole.
func (a *AWS) AddRole(role string) {
	a.mu.Lock()
	a.roles[role] = true
	a.mu.Unlock()
}

// Deny makes IAM deny action (e.g. "ec2-instance-connect:SendSSHPublicKey")
// to every principal until Allow.
func (a *AWS) Deny(action string) {
	a.mu.Lock()
	a.denied[action] = true
	a.mu.Unlock()
}

// Allow undoes Deny.
func (a *AWS) Allow(action string) {
	a.mu.Lock()
	delete(a.denied, action)
	a.mu.Unlock()
}

// Throttle answers the next n requests for action with a throttling error.
func (a *AWS) Throttle(action string, n int) {
	a.mu.Lock()
	a.throttled[action] = n
	a.mu.Unlock()
}

// AdvanceAfterPush moves Clock by d after every key push, as if the login
// that uses the key came d later.
func (a *AWS) AdvanceAfterPush(d time.Duration) {
	a.mu.Lock()
	a.afterPush = d
	a.mu.Unlock()
}

// Calls lists the requests the emulator accepted or refused, one line
// each ("ec2-instance-connect:SendSSHPublicKey i-... root: ok").
func (a *AWS) Calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

// PushedKeys are the public keys pushed with SendSSHPublicKey.
func (a *AWS) PushedKeys() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, k := range a.keys {
		out = append(out, k.key)
	}
	return out
}

func (a *AWS) logCall(format string, args ...any) {
	a.mu.Lock()
	a.calls = append(a.calls, fmt.Sprintf(format, args...))
	a.mu.Unlock()
}

// check applies the emulated IAM policy to action: "" when allowed, else
// the error code.
func (a *AWS) check(action string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.denied[action] {
		return "AccessDenied"
	}
	if a.throttled[action] > 0 {
		a.throttled[action]--
		return "Throttling"
	}
	return ""
}

// AddInstance registers an EC2 instance that accepts pushed keys.
func (a *AWS) AddInstance(id, az string) {
	a.mu.Lock()
	a.instances[id] = &awsInstance{id: id, az: az}
	a.mu.Unlock()
}

// SSHDConfig is the sshd_config fragment that makes a real sshd read the
// keys pushed for instance, as the EC2 Instance Connect package
// configures it on Amazon Linux and Ubuntu: an AuthorizedKeysCommand
// helper (written here) that fetches the user's active keys from the
// instance metadata service, emulated on loopback.
func (a *AWS) SSHDConfig(t testing.TB, instance string) string {
	t.Helper()
	curl := RequireBinary(t, "curl", "curl")
	u, err := userName()
	if err != nil {
		t.Fatalf("testenv: aws: %v", err)
	}
	// sshd runs the helper only from a path whose every directory is owned
	// by root (or the user) and writable by no one else, which rules out
	// the temporary directory.
	base, err := os.UserCacheDir()
	if err != nil {
		if os.Geteuid() != 0 {
			t.Fatalf("testenv: aws: a directory for the AuthorizedKeysCommand helper: %v", err)
		}
		base = "/var/cache"
	}
	parent := filepath.Join(base, "airlock-testenv")
	dir := filepath.Join(parent, "eic-"+randomHex(6))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("testenv: aws: %v", err)
	}
	// Whatever the umask, neither may be group- or world-writable.
	for _, d := range []string{parent, dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("testenv: aws: %v", err)
		}
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	helper := filepath.Join(dir, "eic_run_authorized_keys")
	script := fmt.Sprintf(`#!/bin/sh
# EC2 Instance Connect's instance-side helper, as emulated by airlock's
# testenv: sshd runs it with the login user's name and it prints the keys
# pushed for that user on this instance in the last 60 seconds, read from
# the (emulated) instance metadata service. No keys: curl fails, sshd
# falls back to the other methods.
exec %s -sf --max-time 5 "%s/%s/latest/meta-data/managed-ssh-keys/active-keys/$1/"
`, curl, a.keysURL, instance)
	if err := os.WriteFile(helper, []byte(script), 0o755); err != nil {
		t.Fatalf("testenv: aws: %v", err)
	}
	return fmt.Sprintf("AuthorizedKeysCommand %s %%u\nAuthorizedKeysCommandUser %s\n", helper, u)
}

// serveKeys is the instance metadata service's key listing: the keys
// pushed for the user on the instance within KeyValidity of Clock's now.
func (a *AWS) serveKeys(w http.ResponseWriter, r *http.Request) {
	// /INSTANCE/latest/meta-data/managed-ssh-keys/active-keys/USER/
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 6 || parts[1] != "latest" || parts[4] != "active-keys" {
		http.NotFound(w, r)
		return
	}
	instance, user := parts[0], parts[5]
	now := a.Clock.Now()
	a.mu.Lock()
	var active, stale int
	var out strings.Builder
	for _, k := range a.keys {
		if k.instance != instance || k.user != user {
			continue
		}
		if now.Sub(k.at) < KeyValidity {
			active++
			out.WriteString(strings.TrimSpace(k.key) + "\n")
		} else {
			stale++
		}
	}
	a.mu.Unlock()
	a.logCall("instance %s: sshd asked for %s's keys: %d active, %d expired", instance, user, active, stale)
	if active == 0 {
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write([]byte(out.String()))
}

// makeCA creates the CA and the certificate every emulated endpoint
// presents.
func (a *AWS) makeCA(t testing.TB) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "airlock testenv AWS emulator CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	a.tlsCert = tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
	a.CAFile = filepath.Join(a.dir, "aws-emulator-ca.pem")
	if err := os.WriteFile(a.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (a *AWS) serverTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{a.tlsCert}, MinVersion: tls.VersionTLS12}
}

func (a *AWS) listenTLS(t testing.TB) net.Listener {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", a.serverTLS())
	if err != nil {
		t.Fatalf("testenv: aws: %v", err)
	}
	return ln
}
