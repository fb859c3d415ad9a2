// Package config loads and validates the gateway's YAML configuration.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
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
}

// TLS names a certificate and key in PEM files.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

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
	Replicas int `yaml:"replicas"`
	// Mode is "strict": nothing is forwarded before its event is
	// acknowledged. It is the only mode.
	Mode string `yaml:"mode"`
	// PublishTimeout bounds the wait for an acknowledgement; past it the
	// statement is refused. Default 2s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// ParamMaxBytes caps each recorded statement parameter (default 1024);
	// longer values are cut and marked truncated.
	ParamMaxBytes int `yaml:"param_max_bytes"`
	// RedactParams records parameters' sizes but not their values.
	RedactParams bool `yaml:"redact_params"`
	// SigningKeyFile is the gateway's ed25519 key. Empty: generated in
	// DataDir.
	SigningKeyFile string `yaml:"signing_key_file"`
}

// Grants configures the control plane.
type Grants struct {
	// DefaultTTL is a grant's lifetime when the request names none (1h).
	DefaultTTL time.Duration `yaml:"default_ttl"`
	// MaxTTL caps what a request may ask for (24h).
	MaxTTL time.Duration `yaml:"max_ttl"`
	// Bucket is the JetStream key-value bucket of grants.
	Bucket string `yaml:"bucket"`
}

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
}

// Auth is how the gateway authenticates to a resource.
type Auth struct {
	// Type is password, rds-iam, private_key or ec2-instance-connect.
	Type string `yaml:"type"`
	// PasswordEnv names the environment variable holding the password
	// (type password), so no secret sits in the file.
	PasswordEnv string `yaml:"password_env"`
	Region      string `yaml:"region"`
	InstanceID  string `yaml:"instance_id"`
	KeyFile     string `yaml:"key_file"`
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
	if r.ParamMaxBytes == 0 {
		r.ParamMaxBytes = 1024
	}
	g := &c.Grants
	if g.DefaultTTL == 0 {
		g.DefaultTTL = time.Hour
	}
	if g.MaxTTL == 0 {
		g.MaxTTL = 24 * time.Hour
	}
	if g.Bucket == "" {
		g.Bucket = "airlock_grants"
	}
	for i := range c.Resources {
		if c.Resources[i].TLS.Mode == "" {
			c.Resources[i].TLS.Mode = "prefer"
		}
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
	if c.Recorder.PublishTimeout < 0 {
		bad("recorder.publish_timeout", "must be positive")
	}
	if !isToken(c.Recorder.Stream) {
		bad("recorder.stream", "%q may hold only letters, digits, - and _", c.Recorder.Stream)
	}
	if !isToken(c.Grants.Bucket) {
		bad("grants.bucket", "%q may hold only letters, digits, - and _", c.Grants.Bucket)
	}
	if c.Grants.DefaultTTL < 0 || c.Grants.MaxTTL < c.Grants.DefaultTTL {
		bad("grants", "default_ttl (%s) must be positive and at most max_ttl (%s)", c.Grants.DefaultTTL, c.Grants.MaxTTL)
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
			default:
				bad(key+".auth.type", "%q is not supported for ssh (private_key or ec2-instance-connect)", r.Auth.Type)
			}
		default:
			bad(key+".protocol", "%q is not postgres, mysql or ssh", r.Protocol)
		}
	}
	return errors.Join(errs...)
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
