// Package config loads and validates the gateway's YAML configuration.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole gateway configuration: one YAML file.
type Config struct {
	// DataDir holds the embedded JetStream store, the generated TLS
	// certificate and the generated keys. Relative paths are relative to
	// the config file.
	DataDir string `yaml:"data_dir"`
	Listen  Listen `yaml:"listen"`
	// TLS is the certificate the listeners present. Omitted: a self-signed
	// one is generated in DataDir.
	TLS        TLS        `yaml:"tls"`
	Recorder   Recorder   `yaml:"recorder"`
	Grants     Grants     `yaml:"grants"`
	Identities []Identity `yaml:"identities"`
	Resources  []Resource `yaml:"resources"`
	// AWS is how the gateway reaches AWS for rds-iam and
	// ec2-instance-connect resources; see docs/aws.md.
	AWS AWS `yaml:"aws"`
	// Limits bound what one client may cost the gateway before and while
	// it holds a session: login time, stalled messages, login failures.
	Limits Limits `yaml:"limits"`
	// Console is the web console served under /ui/ on listen.http; see
	// docs/console.md.
	Console Console `yaml:"console"`
	// Notify are the webhook targets told when a request waits, is
	// decided, a grant ends, a statement is denied or a session is
	// interrupted; see docs/notifications.md.
	Notify []NotifyTarget `yaml:"notify"`
}

// Console configures the web console and the links that point to it.
type Console struct {
	// PublicURL is the console's base URL as people reach it
	// (https://airlock.example.com): the base of sign-in links and of
	// links in notifications. Empty: the URL the CLI used to reach the
	// gateway.
	PublicURL string `yaml:"public_url"`
	// IdleTimeout ends a console session unused for this long (30m).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// SessionLifetime ends a console session this long after sign-in,
	// used or not (12h).
	SessionLifetime time.Duration `yaml:"session_lifetime"`
	// Bucket is the JetStream key-value bucket of console sessions and
	// sign-in links (airlock_console).
	Bucket string `yaml:"bucket"`
}

// Notification event types a target may ask for.
var NotifyEvents = []string{
	"request.created", "request.approved", "request.denied",
	"grant.revoked", "grant.expired", "statement.denied", "statement.held", "session.interrupted",
}

// NotifyTarget is one webhook that receives notifications.
type NotifyTarget struct {
	// Name identifies the target in metrics, logs, `airlock notify
	// status` and its JetStream consumer (letters, digits, - and _).
	// Default: the URL's host and a hash of the whole URL; set it to keep
	// a target's undelivered notifications when its URL changes.
	Name string `yaml:"name"`
	// URL receives a POST per notification. A Slack webhook URL is a
	// secret: it is never logged beyond its scheme and host.
	URL string `yaml:"url"`
	// SecretEnv names the environment variable holding the signing
	// secret of a standard target: whsec_ and base64 of 24 to 64 bytes.
	SecretEnv string `yaml:"secret_env"`
	// Format is standard (Standard Webhooks, signed) or slack (a Block
	// Kit message for an incoming webhook).
	Format string `yaml:"format"`
	// Events are the notification types sent to this target.
	Events []string `yaml:"events"`
	// Timeout bounds one delivery attempt (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// RetryMin is the wait before the first retry; each further retry
	// waits twice as long, up to RetryMax (defaults 5s and 1h).
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// RetryFor is how long a notification is retried before it is given
	// up (default and minimum 24h, at most 6 days).
	RetryFor time.Duration `yaml:"retry_for"`
}

// Secret returns the target's signing secret from its environment
// variable.
func (t *NotifyTarget) Secret() string { return os.Getenv(t.SecretEnv) }

// Bounds of notify[].retry_for.
const (
	MinNotifyRetryFor = 24 * time.Hour
	MaxNotifyRetryFor = 6 * 24 * time.Hour
)

// Limits protect the listeners from clients that guess tokens or hold
// connections without finishing what they started.
type Limits struct {
	// LoginTimeout bounds a connection's startup: TLS, the protocol's
	// handshake and authentication must finish within it (default 60s, as
	// PostgreSQL's authentication_timeout; a person may paste a token).
	LoginTimeout time.Duration `yaml:"login_timeout"`
	// MessageTimeout is how long a message (a Postgres message, a MySQL
	// packet) that has begun to arrive may wait for its next bytes; past
	// it the session ends (default 30s). Idle time between messages is
	// not limited. SSH clients are instead asked for a keepalive reply
	// after this much silence.
	MessageTimeout time.Duration `yaml:"message_timeout"`
	// LoginFailures slows down, then refuses, repeated failed logins.
	LoginFailures LoginFailures `yaml:"login_failures"`
}

// LoginFailures is the policy for failed logins (a wrong token, an
// unknown agent or resource), counted per client address and per claimed
// agent over Window. Each failure's answer is delayed, longer the more
// failures the address or agent had; past PerSource (PerAgent) failures
// further logins from that address (for that agent) are refused without
// checking the token until Lockout has passed. Counts are per gateway
// replica.
type LoginFailures struct {
	// PerSource failures from one client IP address within Window lock
	// the address out (default 10; -1: no limit).
	PerSource int `yaml:"per_source"`
	// PerAgent failures naming one agent, from anywhere, within Window
	// lock the agent out (default 50; -1: no limit). A lockout also
	// refuses the agent's valid tokens: keep it well above what honest
	// mistakes reach.
	PerAgent int `yaml:"per_agent"`
	// Window is how long a failure counts (default 10m).
	Window time.Duration `yaml:"window"`
	// Lockout is how long an address or agent is refused once locked
	// (default 5m).
	Lockout time.Duration `yaml:"lockout"`
	// Delay is how long the answer to the first failure waits; it doubles
	// with each further failure up to MaxDelay (defaults 100ms and 2s).
	Delay    time.Duration `yaml:"delay"`
	MaxDelay time.Duration `yaml:"max_delay"`
}

// AWS holds the gateway-wide AWS settings. The identity itself comes from
// the default credential chain (environment, shared config, web identity,
// container or instance role), never from this file.
type AWS struct {
	// EndpointURL sends every AWS API call (STS, EC2, EC2 Instance Connect)
	// to this URL instead of the regional endpoints: a proxy, or emulators
	// in tests. Empty: the SDK's regional endpoints (and AWS_ENDPOINT_URL).
	EndpointURL string `yaml:"endpoint_url"`
	// CAFile is a PEM bundle trusted, besides the system roots, for TLS to
	// the AWS APIs and to EC2 Instance Connect Endpoints (a TLS-inspecting
	// proxy's CA, or an emulator's). RDS certificates are verified with
	// the resource's tls.ca_file or the embedded RDS bundle instead.
	CAFile string `yaml:"ca_file"`
	// RDSConnectRate caps the new IAM-authenticated connections this
	// gateway opens per second to one RDS endpoint (default 100). RDS
	// recommends staying under 200 per second per instance, all clients
	// together: divide it among gateway replicas.
	RDSConnectRate float64 `yaml:"rds_connect_rate"`
}

// Listen is where each listener binds. An empty address disables it.
type Listen struct {
	Postgres string `yaml:"postgres"`
	MySQL    string `yaml:"mysql"`
	SSH      string `yaml:"ssh"`
	HTTP     string `yaml:"http"`
	// Metrics serves Prometheus metrics on /metrics and Go profiles on
	// /debug/pprof/. Empty: off. Keep it on a private address.
	Metrics string `yaml:"metrics"`
	// AllowPlaintext lets database clients connect without TLS. Off by
	// default: the grant token is a password.
	AllowPlaintext bool `yaml:"allow_plaintext"`
	// SSHHostKeyFile is the SSH listener's host key (a private key file).
	// Empty: an ed25519 key generated in DataDir (ssh_host_ed25519_key).
	SSHHostKeyFile string `yaml:"ssh_host_key_file"`
	// SSHCiphers are the ciphers the SSH listener offers agents. Empty:
	// DefaultSSHCiphers. See docs/ssh.md, "Ciphers".
	SSHCiphers []string `yaml:"ssh_ciphers"`
}

// DefaultSSHCiphers are the ciphers offered to agents by default: AES-GCM,
// and AES-CTR for clients without it (paramiko before 3.x).
// chacha20-poly1305, which OpenSSH prefers, is left out: in Go it runs
// without hardware help and the gateway handles every byte twice.
var DefaultSSHCiphers = []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr"}

// SupportedSSHCiphers are the ciphers listen.ssh_ciphers may name: the
// modern ones golang.org/x/crypto/ssh implements.
var SupportedSSHCiphers = []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr"}

// TLS names a certificate and key in PEM files.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Bounds of recorder.max_statement_bytes.
const (
	DefaultMaxStatementBytes = 64 << 20
	MinMaxStatementBytes     = 1 << 10
	MaxMaxStatementBytes     = 1<<30 - 1
)

// Recorder configures where events go.
type Recorder struct {
	// NATSURL is the JetStream cluster to record to. Empty: an embedded
	// server with its data in DataDir.
	NATSURL string `yaml:"nats_url"`
	// CredentialsFile is the NATS credentials file of the gateway's user.
	CredentialsFile string `yaml:"credentials_file"`
	// EmbeddedListen is where the embedded server also listens, for tools
	// such as the nats CLI (e.g. 127.0.0.1:4222). Empty: in-process only,
	// so nothing outside the gateway can reach the recorder.
	EmbeddedListen string `yaml:"embedded_listen"`
	// Stream is the JetStream stream that holds events.
	Stream string `yaml:"stream"`
	// Replicas is the stream's replica count (3 on a production cluster).
	// Above 1, events and grants also get standbys that take over at once
	// when a server dies (docs/recorder.md, "Losing a node").
	Replicas int `yaml:"replicas"`
	// Mode is "strict": nothing is forwarded before its event is
	// acknowledged. It is the only mode.
	Mode string `yaml:"mode"`
	// PublishTimeout bounds the wait for an acknowledgement; past it the
	// statement is refused. Default 2s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// SignInterval is the longest a live session's event waits to be
	// covered by an ed25519 signature (default 500ms); see
	// docs/recorder.md, "Signing granularity".
	SignInterval time.Duration `yaml:"sign_interval"`
	// ParamMaxBytes caps each recorded statement parameter (default 1024);
	// longer values are cut and marked truncated.
	ParamMaxBytes int `yaml:"param_max_bytes"`
	// RedactParams records parameters' sizes but not their values.
	RedactParams bool `yaml:"redact_params"`
	// MaxStatementBytes is the largest client message carrying a
	// statement (its text with its parameters: a Postgres Query, Parse or
	// Bind, a MySQL COM_QUERY, COM_STMT_PREPARE or COM_STMT_EXECUTE) the
	// gateway records and forwards. A larger one is refused with an error
	// that names this limit and recorded by its size, SHA-256 and first
	// bytes. Default 64 MiB (MySQL's max_allowed_packet default); at most
	// 1 GiB - 1, PostgreSQL's own limit. See docs/recorder.md, "Large
	// statements".
	MaxStatementBytes int `yaml:"max_statement_bytes"`
	// MaxOutputBytes is how much of one SSH exec's data (stdout, stderr
	// and stdin together) is recorded as data events; past it the bytes
	// are only counted. Terminal sessions (shells, pty) are recorded in
	// full. Default 1 MiB.
	MaxOutputBytes int64 `yaml:"max_output_bytes"`
	// SigningKeyFile is the gateway's ed25519 key (PKCS#8 PEM, e.g. from
	// openssl genpkey -algorithm ed25519). Empty: DataDir/signing.key,
	// generated on first start. Gateway replicas writing one stream share
	// a key file so reviewers trust one published key.
	SigningKeyFile string `yaml:"signing_key_file"`
	// MaxAge, MaxBytes and MaxMsgs are retention limits for the stream,
	// none by default: events are kept until the operator decides
	// otherwise. Set, they are applied when the stream is created and an
	// existing stream may not remove events sooner than they allow.
	MaxAge   time.Duration `yaml:"max_age"`
	MaxBytes int64         `yaml:"max_bytes"`
	MaxMsgs  int64         `yaml:"max_msgs"`
	// EmbeddedSyncAlways makes the embedded server fsync every event before
	// acknowledging it (JetStream sync_interval: always).
	EmbeddedSyncAlways bool `yaml:"embedded_sync_always"`
	// StartTimeout is how long the gateway waits at start for NATS: the
	// connection, a JetStream leader, the stream and the buckets (a
	// cluster that is still electing). Past it the gateway exits, naming
	// what it waited for. Omitted: 2m; 0s waits forever. See
	// docs/recorder.md, "Starting".
	StartTimeout *time.Duration `yaml:"start_timeout"`
	// InstanceTimeout is how long a gateway process may miss its
	// heartbeat before another gateway declares it stopped and marks its
	// open sessions interrupted (default 15s). See docs/recorder.md,
	// "Interrupted sessions".
	InstanceTimeout time.Duration `yaml:"instance_timeout"`
	// InstancesBucket is the JetStream key-value bucket where gateway
	// processes heartbeat (default airlock_instances).
	InstancesBucket string `yaml:"instances_bucket"`
	// GroupCommit lets the events of the gateway's sessions that arrive
	// while a publish is in flight share one message (docs/recorder.md,
	// "Group commit"). Omitted: on.
	GroupCommit *bool `yaml:"group_commit"`
}

// GroupCommitOn is recorder.group_commit with its default.
func (r *Recorder) GroupCommitOn() bool { return r.GroupCommit == nil || *r.GroupCommit }

// DefaultStartTimeout is recorder.start_timeout when omitted.
const DefaultStartTimeout = 2 * time.Minute

// Grants configures the control plane.
type Grants struct {
	// DefaultTTL is a grant's lifetime when the request names none (1h).
	DefaultTTL time.Duration `yaml:"default_ttl"`
	// MaxTTL caps what a request may ask for (24h).
	MaxTTL time.Duration `yaml:"max_ttl"`
	// RequestTTL is how long a request waits for a decision before it
	// expires (24h). The deadline is stored on the request when it is
	// filed, so changing this does not move requests already waiting.
	RequestTTL time.Duration `yaml:"request_ttl"`
	// Bucket is the JetStream key-value bucket of grants.
	Bucket string `yaml:"bucket"`
	// HoldsBucket is the JetStream key-value bucket of statements held
	// for an approver (airlock_holds).
	HoldsBucket string `yaml:"holds_bucket"`
	// StopGrace is how long a statement still running when its grant is
	// revoked or expires has to end after airlock asked the upstream to
	// cancel it, before airlock ends it harder (the backend, the
	// connection, SIGKILL), and again to confirm that (2s).
	StopGrace time.Duration `yaml:"stop_grace"`
}

// DefaultStopGrace is grants.stop_grace when omitted.
const DefaultStopGrace = 2 * time.Second

// DefaultRequestTTL is grants.request_ttl when omitted: a request
// waits a day for a decision.
const DefaultRequestTTL = 24 * time.Hour

// Role is what an identity may do.
type Role string

// Roles.
const (
	RoleAgent    Role = "agent"
	RoleApprover Role = "approver"
	RoleReviewer Role = "reviewer"
	RoleAdmin    Role = "admin"
)

// Identity is a person or agent known to the gateway.
type Identity struct {
	Name string `yaml:"name"`
	Role Role   `yaml:"role"`
	// TokenSHA256 is the hex SHA-256 of the identity's API token.
	TokenSHA256   string   `yaml:"token_sha256"`
	SSHPublicKeys []string `yaml:"ssh_public_keys"`
}

// Resource is an upstream the gateway can reach.
type Resource struct {
	Name     string `yaml:"name"`
	Protocol string `yaml:"protocol"` // postgres, mysql or ssh
	Address  string `yaml:"address"`  // host:port
	Database string `yaml:"database"`
	User     string `yaml:"user"`
	Auth     Auth   `yaml:"auth"`
	TLS      UpTLS  `yaml:"tls"`
	HostKey  string `yaml:"host_key"`
	// KnownHostsFile is an OpenSSH known_hosts file to verify an ssh
	// resource's host key with, instead of or besides HostKey.
	KnownHostsFile string `yaml:"known_hosts_file"`
}

// Auth is how the gateway authenticates to a resource.
type Auth struct {
	// Type is password, rds-iam, private_key or ec2-instance-connect.
	Type string `yaml:"type"`
	// PasswordEnv names the environment variable holding the password
	// (type password), so no secret sits in the file.
	PasswordEnv string `yaml:"password_env"`
	// Region is the AWS region of an rds-iam or ec2-instance-connect
	// resource.
	Region     string `yaml:"region"`
	InstanceID string `yaml:"instance_id"`
	KeyFile    string `yaml:"key_file"`
	// AssumeRoleARN (rds-iam, ec2-instance-connect) is a role the gateway
	// assumes with its own identity before minting the credential, e.g. a
	// role in the account that owns the database or instance.
	AssumeRoleARN string `yaml:"assume_role_arn"`
	// AvailabilityZone (ec2-instance-connect) is sent with the key. AWS
	// no longer requires it; set it only where a policy conditions on it.
	AvailabilityZone string `yaml:"availability_zone"`
	// Endpoint (ec2-instance-connect) reaches an instance in a private
	// subnet through an EC2 Instance Connect Endpoint.
	Endpoint *Endpoint `yaml:"endpoint"`
}

// Endpoint is the way to an instance without a reachable address.
type Endpoint struct {
	// Type is eice: an EC2 Instance Connect Endpoint.
	Type string `yaml:"type"`
	// ID is the endpoint's id (eice-0123456789abcdef0).
	ID string `yaml:"id"`
	// DNSName is the endpoint's DNS name. Empty: looked up once with
	// ec2:DescribeInstanceConnectEndpoints.
	DNSName string `yaml:"dns_name"`
}

// UpTLS is how the gateway protects its connection to a resource.
type UpTLS struct {
	// Mode is disable, prefer, require, verify-ca or verify-full
	// (Postgres's sslmode words). Default prefer.
	Mode string `yaml:"mode"`
	// CAFile is a PEM bundle to verify the upstream with.
	CAFile string `yaml:"ca_file"`
}

// Password returns the resource's password from its environment variable.
func (r *Resource) Password() string { return os.Getenv(r.Auth.PasswordEnv) }

// Resource returns the resource called name, or nil.
func (c *Config) Resource(name string) *Resource {
	for i := range c.Resources {
		if c.Resources[i].Name == name {
			return &c.Resources[i]
		}
	}
	return nil
}

// Identity returns the identity called name, or nil.
func (c *Config) Identity(name string) *Identity {
	for i := range c.Identities {
		if c.Identities[i].Name == name {
			return &c.Identities[i]
		}
	}
	return nil
}

// Load reads, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, err
	}
	if c.DataDir != "" && !filepath.IsAbs(c.DataDir) {
		c.DataDir = filepath.Join(filepath.Dir(path), c.DataDir)
	}
	return c, nil
}

// Parse decodes YAML, rejecting unknown keys, then defaults and validates.
func Parse(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = "./airlock-data"
	}
	r := &c.Recorder
	if r.Stream == "" {
		r.Stream = "AIRLOCK_EVENTS"
	}
	if r.Replicas == 0 {
		r.Replicas = 1
	}
	if r.Mode == "" {
		r.Mode = "strict"
	}
	if r.PublishTimeout == 0 {
		r.PublishTimeout = 2 * time.Second
	}
	if r.SignInterval == 0 {
		r.SignInterval = 500 * time.Millisecond
	}
	if r.MaxOutputBytes == 0 {
		r.MaxOutputBytes = 1 << 20
	}
	if r.ParamMaxBytes == 0 {
		r.ParamMaxBytes = 1024
	}
	if r.StartTimeout == nil {
		d := DefaultStartTimeout
		r.StartTimeout = &d
	}
	if r.InstanceTimeout == 0 {
		r.InstanceTimeout = 15 * time.Second
	}
	if r.InstancesBucket == "" {
		r.InstancesBucket = "airlock_instances"
	}
	if r.MaxStatementBytes == 0 {
		r.MaxStatementBytes = DefaultMaxStatementBytes
	}
	g := &c.Grants
	if g.DefaultTTL == 0 {
		g.DefaultTTL = time.Hour
	}
	if g.MaxTTL == 0 {
		g.MaxTTL = 24 * time.Hour
	}
	if g.RequestTTL == 0 {
		g.RequestTTL = DefaultRequestTTL
	}
	if g.Bucket == "" {
		g.Bucket = "airlock_grants"
	}
	if g.HoldsBucket == "" {
		g.HoldsBucket = "airlock_holds"
	}
	if g.StopGrace == 0 {
		g.StopGrace = DefaultStopGrace
	}
	for i := range c.Resources {
		if c.Resources[i].TLS.Mode == "" {
			c.Resources[i].TLS.Mode = "prefer"
			if c.Resources[i].Auth.Type == "rds-iam" {
				// The token is a password: it goes only to a server whose
				// certificate and name are verified.
				c.Resources[i].TLS.Mode = "verify-full"
			}
		}
	}
	cs := &c.Console
	if cs.IdleTimeout == 0 {
		cs.IdleTimeout = 30 * time.Minute
	}
	if cs.SessionLifetime == 0 {
		cs.SessionLifetime = 12 * time.Hour
	}
	if cs.Bucket == "" {
		cs.Bucket = "airlock_console"
	}
	if c.AWS.RDSConnectRate == 0 {
		c.AWS.RDSConnectRate = 100
	}
	for i := range c.Notify {
		t := &c.Notify[i]
		if t.Name == "" && t.URL != "" {
			t.Name = defaultTargetName(t.URL)
		}
		if t.Timeout == 0 {
			t.Timeout = 10 * time.Second
		}
		if t.RetryMin == 0 {
			t.RetryMin = 5 * time.Second
		}
		if t.RetryMax == 0 {
			t.RetryMax = time.Hour
		}
		if t.RetryFor == 0 {
			t.RetryFor = MinNotifyRetryFor
		}
	}
	l := &c.Limits
	if l.LoginTimeout == 0 {
		l.LoginTimeout = 60 * time.Second
	}
	if l.MessageTimeout == 0 {
		l.MessageTimeout = 30 * time.Second
	}
	f := &l.LoginFailures
	if f.PerSource == 0 {
		f.PerSource = 10
	}
	if f.PerAgent == 0 {
		f.PerAgent = 50
	}
	if f.Window == 0 {
		f.Window = 10 * time.Minute
	}
	if f.Lockout == 0 {
		f.Lockout = 5 * time.Minute
	}
	if f.Delay == 0 {
		f.Delay = 100 * time.Millisecond
	}
	if f.MaxDelay == 0 {
		f.MaxDelay = 2 * time.Second
	}
}

// Validate checks every key and names the first bad one.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
	}
	for _, l := range []struct{ key, addr string }{
		{"listen.postgres", c.Listen.Postgres}, {"listen.mysql", c.Listen.MySQL},
		{"listen.ssh", c.Listen.SSH}, {"listen.http", c.Listen.HTTP}, {"listen.metrics", c.Listen.Metrics},
	} {
		if l.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			bad(l.key, "%q is not host:port", l.addr)
		}
	}
	if c.Listen.Postgres == "" && c.Listen.MySQL == "" && c.Listen.SSH == "" {
		bad("listen", "no listener configured (set postgres, mysql or ssh)")
	}
	if c.Listen.HTTP == "" {
		bad("listen.http", "required: the CLI and approvals go through the HTTP API")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file go together")
	}
	if c.Recorder.Mode != "strict" {
		bad("recorder.mode", "%q is not supported (only strict)", c.Recorder.Mode)
	}
	if c.Recorder.Replicas < 1 || c.Recorder.Replicas > 5 {
		bad("recorder.replicas", "%d is out of range 1..5", c.Recorder.Replicas)
	}
	if c.Recorder.ParamMaxBytes < 0 {
		bad("recorder.param_max_bytes", "must be positive")
	}
	if n := c.Recorder.MaxStatementBytes; n < MinMaxStatementBytes || n > MaxMaxStatementBytes {
		bad("recorder.max_statement_bytes", "%d is out of range %d..%d (1 KiB to 1 GiB - 1, PostgreSQL's message limit)", n, MinMaxStatementBytes, MaxMaxStatementBytes)
	}
	for _, name := range c.Listen.SSHCiphers {
		if !slices.Contains(SupportedSSHCiphers, name) {
			bad("listen.ssh_ciphers", "%q is not one of %s", name, strings.Join(SupportedSSHCiphers, ", "))
		}
	}
	if c.Recorder.SignInterval < time.Millisecond || c.Recorder.SignInterval > time.Minute {
		bad("recorder.sign_interval", "must be between 1ms and 1m")
	}
	if c.Recorder.PublishTimeout < 0 {
		bad("recorder.publish_timeout", "must be positive")
	}
	if c.Recorder.MaxOutputBytes < 0 {
		bad("recorder.max_output_bytes", "must be positive")
	}
	if c.Recorder.MaxAge < 0 {
		bad("recorder.max_age", "must be positive (omit it for no limit)")
	} else if c.Recorder.MaxAge > 0 && c.Recorder.MaxAge < time.Hour {
		bad("recorder.max_age", "%s is shorter than an hour; events would be gone before anyone reviews them", c.Recorder.MaxAge)
	}
	if c.Recorder.MaxBytes < 0 {
		bad("recorder.max_bytes", "must be positive (omit it for no limit)")
	}
	if c.Recorder.MaxMsgs < 0 {
		bad("recorder.max_msgs", "must be positive (omit it for no limit)")
	}
	if c.Recorder.EmbeddedSyncAlways && c.Recorder.NATSURL != "" {
		bad("recorder.embedded_sync_always", "applies to the embedded server only; set sync_interval: always in the cluster's JetStream configuration")
	}
	c.Limits.validate(bad)
	if !isToken(c.Recorder.Stream) {
		bad("recorder.stream", "%q may hold only letters, digits, - and _", c.Recorder.Stream)
	}
	if d := c.Recorder.StartTimeout; d != nil && *d < 0 {
		bad("recorder.start_timeout", "must be positive, or 0 to wait for NATS forever")
	}
	if d := c.Recorder.InstanceTimeout; d < 2*time.Second || d > 10*time.Minute {
		bad("recorder.instance_timeout", "%s is out of range 2s..10m", d)
	}
	if !isToken(c.Recorder.InstancesBucket) {
		bad("recorder.instances_bucket", "%q may hold only letters, digits, - and _", c.Recorder.InstancesBucket)
	} else if c.Recorder.InstancesBucket == c.Grants.Bucket {
		bad("recorder.instances_bucket", "%q is also grants.bucket; they must differ", c.Recorder.InstancesBucket)
	}
	if !isToken(c.Grants.Bucket) {
		bad("grants.bucket", "%q may hold only letters, digits, - and _", c.Grants.Bucket)
	}
	c.Console.validate(c, bad)
	if c.Grants.DefaultTTL < 0 || c.Grants.MaxTTL < c.Grants.DefaultTTL {
		bad("grants", "default_ttl (%s) must be positive and at most max_ttl (%s)", c.Grants.DefaultTTL, c.Grants.MaxTTL)
	}
	if c.Grants.RequestTTL < time.Second {
		bad("grants.request_ttl", "%s must be at least 1s: a request needs time to be seen and decided", c.Grants.RequestTTL)
	}
	if c.Grants.StopGrace < 0 || c.Grants.StopGrace > time.Minute {
		bad("grants.stop_grace", "%s must be positive and at most 1m: a revoked grant's work must stop soon", c.Grants.StopGrace)
	}
	seen := map[string]bool{}
	for i, id := range c.Identities {
		key := fmt.Sprintf("identities[%d]", i)
		switch {
		case id.Name == "":
			bad(key+".name", "required")
		case strings.ContainsAny(id.Name, "+@ \t/"):
			bad(key+".name", "%q may not contain +, @, / or spaces", id.Name)
		case seen[id.Name]:
			bad(key+".name", "%q is defined twice", id.Name)
		}
		seen[id.Name] = true
		if !slices.Contains([]Role{RoleAgent, RoleApprover, RoleReviewer, RoleAdmin}, id.Role) {
			bad(key+".role", "%q is not agent, approver, reviewer or admin", id.Role)
		}
		if b, err := hex.DecodeString(id.TokenSHA256); err != nil || len(b) != sha256.Size {
			bad(key+".token_sha256", "must be 64 hex digits (sha256 of the API token)")
		}
	}
	seen = map[string]bool{}
	for i := range c.Resources {
		r := &c.Resources[i]
		key := fmt.Sprintf("resources[%d]", i)
		switch {
		case r.Name == "":
			bad(key+".name", "required")
		case !isToken(r.Name):
			bad(key+".name", "%q may hold only letters, digits, - and _", r.Name)
		case seen[r.Name]:
			bad(key+".name", "%q is defined twice", r.Name)
		}
		seen[r.Name] = true
		if _, _, err := net.SplitHostPort(r.Address); err != nil {
			bad(key+".address", "%q is not host:port", r.Address)
		}
		if r.User == "" {
			bad(key+".user", "required")
		}
		switch r.Protocol {
		case "postgres", "mysql":
			if r.Database == "" {
				bad(key+".database", "required for %s", r.Protocol)
			}
			switch r.Auth.Type {
			case "password":
				if r.Auth.PasswordEnv == "" {
					bad(key+".auth.password_env", "required for auth type password")
				}
			case "rds-iam":
				if r.Auth.Region == "" {
					bad(key+".auth.region", "required for auth type rds-iam")
				}
				if r.Auth.PasswordEnv != "" {
					bad(key+".auth.password_env", "not used with auth type rds-iam: the gateway mints an IAM token for each connection")
				}
				if r.TLS.Mode != "verify-full" {
					bad(key+".tls.mode", "%q: auth type rds-iam sends its token as a password, only over TLS with the server's certificate and name verified (verify-full)", r.TLS.Mode)
				}
			default:
				bad(key+".auth.type", "%q is not supported for %s (password or rds-iam)", r.Auth.Type, r.Protocol)
			}
			if !slices.Contains([]string{"disable", "prefer", "require", "verify-ca", "verify-full"}, r.TLS.Mode) {
				bad(key+".tls.mode", "%q is not disable, prefer, require, verify-ca or verify-full", r.TLS.Mode)
			}
		case "ssh":
			switch r.Auth.Type {
			case "private_key":
				if r.Auth.KeyFile == "" {
					bad(key+".auth.key_file", "required for auth type private_key")
				}
			case "ec2-instance-connect":
				if r.Auth.InstanceID == "" {
					bad(key+".auth.instance_id", "required for auth type ec2-instance-connect")
				}
				if r.Auth.Region == "" {
					bad(key+".auth.region", "required for auth type ec2-instance-connect")
				}
				if r.Auth.KeyFile != "" {
					bad(key+".auth.key_file", "not used with auth type ec2-instance-connect: the gateway makes a key for each session")
				}
			default:
				bad(key+".auth.type", "%q is not supported for ssh (private_key or ec2-instance-connect)", r.Auth.Type)
			}
			if strings.TrimSpace(r.HostKey) == "" && r.KnownHostsFile == "" {
				bad(key+".host_key", "required for ssh (or known_hosts_file): the gateway verifies the target's host key")
			}
		default:
			bad(key+".protocol", "%q is not postgres, mysql or ssh", r.Protocol)
		}
		validateAWSAuth(r, key, bad)
	}
	if u := c.AWS.EndpointURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			bad("aws.endpoint_url", "%q is not an http(s) URL", u)
		}
	}
	if c.AWS.RDSConnectRate < 0 {
		bad("aws.rds_connect_rate", "must be positive")
	}
	c.validateNotify(bad)
	return errors.Join(errs...)
}

var (
	reRegion     = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	reInstanceID = regexp.MustCompile(`^i-[0-9a-f]{8,17}$`)
	reEICEID     = regexp.MustCompile(`^eice-[0-9a-f]{8,17}$`)
	reRoleARN    = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$`)
)

// validateAWSAuth checks the AWS keys of a resource's auth: their form,
// and that each is set only where it means something.
func validateAWSAuth(r *Resource, key string, bad func(key, format string, args ...any)) {
	a := &r.Auth
	isAWS := a.Type == "rds-iam" || a.Type == "ec2-instance-connect"
	if a.Region != "" && !reRegion.MatchString(a.Region) {
		bad(key+".auth.region", "%q is not an AWS region (like us-east-1)", a.Region)
	}
	if a.Region != "" && !isAWS {
		bad(key+".auth.region", "only used with auth type rds-iam or ec2-instance-connect")
	}
	if a.AssumeRoleARN != "" {
		if !isAWS {
			bad(key+".auth.assume_role_arn", "only used with auth type rds-iam or ec2-instance-connect")
		} else if !reRoleARN.MatchString(a.AssumeRoleARN) {
			bad(key+".auth.assume_role_arn", "%q is not a role ARN (arn:aws:iam::123456789012:role/NAME)", a.AssumeRoleARN)
		}
	}
	if a.Type != "ec2-instance-connect" {
		for _, k := range []struct {
			name string
			set  bool
		}{{"instance_id", a.InstanceID != ""}, {"availability_zone", a.AvailabilityZone != ""}, {"endpoint", a.Endpoint != nil}} {
			if k.set {
				bad(key+".auth."+k.name, "only used with auth type ec2-instance-connect")
			}
		}
		return
	}
	if a.InstanceID != "" && !reInstanceID.MatchString(a.InstanceID) {
		bad(key+".auth.instance_id", "%q is not an instance id (i-0123456789abcdef0)", a.InstanceID)
	}
	if a.AvailabilityZone != "" && a.Region != "" && !strings.HasPrefix(a.AvailabilityZone, a.Region) {
		bad(key+".auth.availability_zone", "%q is not in region %s", a.AvailabilityZone, a.Region)
	}
	if e := a.Endpoint; e != nil {
		if e.Type != "eice" {
			bad(key+".auth.endpoint.type", "%q is not supported (eice)", e.Type)
		}
		if !reEICEID.MatchString(e.ID) {
			bad(key+".auth.endpoint.id", "%q is not an EC2 Instance Connect Endpoint id (eice-0123456789abcdef0)", e.ID)
		}
		if e.DNSName != "" {
			if _, err := url.Parse("wss://" + e.DNSName + "/"); err != nil || strings.ContainsAny(e.DNSName, "/?#@ ") {
				bad(key+".auth.endpoint.dns_name", "%q is not a host name", e.DNSName)
			}
		}
	}
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (l *Limits) validate(bad func(key, format string, args ...any)) {
	if l.LoginTimeout < time.Second || l.LoginTimeout > 10*time.Minute {
		bad("limits.login_timeout", "must be between 1s and 10m")
	}
	if l.MessageTimeout < time.Second || l.MessageTimeout > time.Hour {
		bad("limits.message_timeout", "must be between 1s and 1h")
	}
	f := &l.LoginFailures
	if f.PerSource < -1 {
		bad("limits.login_failures.per_source", "must be a count, or -1 for no limit")
	}
	if f.PerAgent < -1 {
		bad("limits.login_failures.per_agent", "must be a count, or -1 for no limit")
	}
	if f.Window < 0 {
		bad("limits.login_failures.window", "must be positive")
	}
	if f.Lockout < 0 {
		bad("limits.login_failures.lockout", "must be positive")
	}
	if f.Delay < 0 || f.MaxDelay < f.Delay {
		bad("limits.login_failures", "delay (%s) must be positive and at most max_delay (%s)", f.Delay, f.MaxDelay)
	} else if f.MaxDelay > time.Minute {
		bad("limits.login_failures.max_delay", "%s is longer than a minute", f.MaxDelay)
	}
}

func (cs *Console) validate(c *Config, bad func(key, format string, args ...any)) {
	if cs.PublicURL != "" {
		u, err := url.Parse(cs.PublicURL)
		switch {
		case err != nil:
			bad("console.public_url", "%v", err)
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
			bad("console.public_url", "%q: want an absolute http or https URL such as https://airlock.example.com", cs.PublicURL)
		case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
			bad("console.public_url", "%q: want a base URL, without query, fragment or user", cs.PublicURL)
		}
	}
	if cs.IdleTimeout < time.Minute {
		bad("console.idle_timeout", "%s is shorter than 1m", cs.IdleTimeout)
	}
	if cs.SessionLifetime < cs.IdleTimeout {
		bad("console.session_lifetime", "%s is shorter than console.idle_timeout (%s)", cs.SessionLifetime, cs.IdleTimeout)
	}
	if !isToken(cs.Bucket) {
		bad("console.bucket", "%q may hold only letters, digits, - and _", cs.Bucket)
	} else if cs.Bucket == c.Grants.Bucket || cs.Bucket == c.Recorder.InstancesBucket {
		bad("console.bucket", "%q is also the grants or instances bucket; they must differ", cs.Bucket)
	}
}
