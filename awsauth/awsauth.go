// Package awsauth mints the gateway's own AWS credentials for upstreams:
// RDS IAM authentication tokens (cached per endpoint and user, refreshed
// before their 15-minute lifetime ends, logins rate-limited and retried),
// ephemeral SSH keys pushed with EC2 Instance Connect, and tunnels through
// EC2 Instance Connect Endpoints. The AWS identity comes from the default
// credential chain, optionally through an assumed role; the agent never
// sees what is minted here.
//
// Every failure is an *Error whose text is meant for the agent (the cause
// and the IAM action it needs) and whose log value adds the SDK's detail
// for the operator.
package awsauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"golang.org/x/time/rate"
)

// Options configure a Provider.
type Options struct {
	// EndpointURL sends every AWS API call here (config aws.endpoint_url).
	EndpointURL string
	// CAFile is trusted besides the system roots for AWS API and EICE TLS
	// (config aws.ca_file).
	CAFile string
	// RDSConnectRate caps new IAM logins per second per RDS endpoint
	// (config aws.rds_connect_rate); 0 means 100.
	RDSConnectRate float64
	// SessionName is the RoleSessionName of assumed roles, so CloudTrail
	// shows which gateway acted (default "airlock").
	SessionName string
	// Now is the clock of the token cache; nil is time.Now.
	Now func() time.Time
	// Log receives what happens outside a session (credential checks).
	Log *slog.Logger
}

// Provider mints upstream credentials. It is safe for concurrent use.
type Provider struct {
	endpointURL string
	httpClient  *awshttp.BuildableClient
	tlsConfig   *tls.Config // for EICE websockets
	sessionName string
	now         func() time.Time
	log         *slog.Logger
	rate        float64

	mu       sync.Mutex
	configs  map[configKey]*identity
	tokens   map[tokenKey]*cachedToken
	limiters map[string]*rate.Limiter
	eiceDNS  map[string]string // endpoint id -> DNS name
}

type configKey struct{ region, role string }

// identity is the AWS configuration for one region and role: base holds
// the gateway's own credentials, cfg the ones requests are signed with
// (the assumed role's, or base's).
type identity struct {
	base aws.Config
	cfg  aws.Config
}

// New reads the CA file and prepares the HTTP client; credentials are
// resolved only when first needed.
func New(o Options) (*Provider, error) {
	p := &Provider{
		endpointURL: strings.TrimRight(o.EndpointURL, "/"),
		sessionName: o.SessionName,
		now:         o.Now,
		log:         o.Log,
		rate:        o.RDSConnectRate,
		configs:     map[configKey]*identity{},
		tokens:      map[tokenKey]*cachedToken{},
		limiters:    map[string]*rate.Limiter{},
		eiceDNS:     map[string]string{},
	}
	if p.sessionName == "" {
		p.sessionName = "airlock"
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.rate <= 0 {
		p.rate = 100
	}
	p.tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		b, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("config: aws.ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("config: aws.ca_file: %s holds no PEM certificate", o.CAFile)
		}
		p.tlsConfig.RootCAs = pool
	}
	tlsCfg := p.tlsConfig
	p.httpClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{}
		}
		tr.TLSClientConfig.MinVersion = tls.VersionTLS12
		tr.TLSClientConfig.RootCAs = tlsCfg.RootCAs
	})
	return p, nil
}

// identity returns the configuration for region and role, loading it on
// first use. Loading reads the environment and shared config files; it
// does not contact AWS.
func (p *Provider) identity(ctx context.Context, region, role string) (*identity, error) {
	k := configKey{region, role}
	p.mu.Lock()
	id := p.configs[k]
	p.mu.Unlock()
	if id != nil {
		return id, nil
	}
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(region),
		awsconfig.WithHTTPClient(p.httpClient),
	}
	if p.endpointURL != "" {
		opts = append(opts, awsconfig.WithBaseEndpoint(p.endpointURL))
	}
	base, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, &Error{Msg: "cannot load the gateway's AWS configuration (environment or shared config files): " + err.Error(), Err: err}
	}
	id = &identity{base: base, cfg: base}
	if role != "" {
		cfg := base.Copy()
		cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(base), role, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = p.sessionName
		}))
		id.cfg = cfg
	}
	p.mu.Lock()
	if prev := p.configs[k]; prev != nil {
		id = prev
	} else {
		p.configs[k] = id
	}
	p.mu.Unlock()
	return id, nil
}

// credentials returns the credentials to sign with for region and role,
// naming action (the IAM action they are for) in the error when there are
// none or the role cannot be assumed.
func (p *Provider) credentials(ctx context.Context, region, role, action string) (*identity, aws.Credentials, error) {
	id, err := p.identity(ctx, region, role)
	if err != nil {
		return nil, aws.Credentials{}, err
	}
	// The gateway's own identity first, so "none at all" is told apart
	// from "cannot assume the role".
	creds, err := id.base.Credentials.Retrieve(ctx)
	if err != nil {
		return nil, aws.Credentials{}, noCredentials(action, err)
	}
	if role == "" {
		return id, creds, nil
	}
	creds, err = id.cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return nil, aws.Credentials{}, classify(err, "sts:AssumeRole", role)
	}
	return id, creds, nil
}

// Check resolves the gateway's credentials for region, so the operator
// learns at start rather than at the first session that there are none.
func (p *Provider) Check(ctx context.Context, region string) error {
	id, err := p.identity(ctx, region, "")
	if err != nil {
		return err
	}
	creds, err := id.base.Credentials.Retrieve(ctx)
	if err != nil {
		return noCredentials("", err)
	}
	p.log.Info("AWS credentials found", "region", region, "source", creds.Source, "access_key_id", creds.AccessKeyID, "expires", expiry(creds))
	return nil
}

func expiry(c aws.Credentials) string {
	if !c.CanExpire {
		return "never"
	}
	return c.Expires.UTC().Format(time.RFC3339)
}

// partition is the ARN partition of region.
func partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// isContextErr reports whether err is the caller's deadline or
// cancellation rather than AWS's answer.
func isContextErr(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}
