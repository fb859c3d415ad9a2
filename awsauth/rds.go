package awsauth

import (
	"context"
	"crypto/x509"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	rdsauth "github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"golang.org/x/time/rate"

	"github.com/airlockhq/airlock/config"
)

// RDS IAM tokens live 15 minutes from signing. A cached token is used for
// at most tokenReuse, so a connection attempt never carries one with less
// than five minutes left, whatever the clock skew between gateway and RDS.
const (
	tokenReuse = 10 * time.Minute
	// credsMargin: a token signed with temporary credentials dies with
	// them, so it is not reused in their last minutes.
	credsMargin = 2 * time.Minute
	// rdsAttempts bounds the tries of one connection: a refused cached
	// token gets one fresh retry, a network failure (an RDS failover) up to
	// two more.
	rdsAttempts = 3
)

//go:embed rds-ca-bundle.pem
var rdsBundle []byte

var rdsRoots = sync.OnceValue(func() *x509.CertPool {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(rdsBundle) {
		panic("awsauth: the embedded RDS CA bundle holds no certificate")
	}
	return p
})

// RDSRoots are the embedded Amazon RDS root CAs (see rds-ca-bundle.pem),
// used for rds-iam resources without a tls.ca_file.
func RDSRoots() *x509.CertPool { return rdsRoots() }

type tokenKey struct{ endpoint, region, user, role string }

type cachedToken struct {
	token    string
	useUntil time.Time
}

// token returns a token for k, from the cache unless fresh is set or the
// cached one is too old. cached reports whether it came from the cache.
func (p *Provider) token(ctx context.Context, k tokenKey, fresh bool) (tok string, cached bool, err error) {
	now := p.now()
	p.mu.Lock()
	c := p.tokens[k]
	p.mu.Unlock()
	if c != nil && !fresh && now.Before(c.useUntil) {
		return c.token, true, nil
	}
	_, creds, err := p.credentials(ctx, k.region, k.role, "rds-db:connect")
	if err != nil {
		return "", false, err
	}
	tok, err = rdsauth.BuildAuthToken(ctx, k.endpoint, k.region, k.user, aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return creds, nil
	}))
	if err != nil {
		return "", false, &Error{Action: "rds-db:connect", Err: err, Msg: "cannot sign an RDS IAM token: " + err.Error()}
	}
	until := now.Add(tokenReuse)
	if creds.CanExpire && creds.Expires.Add(-credsMargin).Before(until) {
		until = creds.Expires.Add(-credsMargin)
	}
	p.mu.Lock()
	p.tokens[k] = &cachedToken{token: tok, useUntil: until}
	p.mu.Unlock()
	return tok, false, nil
}

func (p *Provider) forget(k tokenKey, tok string) {
	p.mu.Lock()
	if c := p.tokens[k]; c != nil && c.token == tok {
		delete(p.tokens, k)
	}
	p.mu.Unlock()
}

// limiter is the login rate limit of one RDS endpoint.
func (p *Provider) limiter(endpoint string) *rate.Limiter {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.limiters[endpoint]
	if l == nil {
		burst := max(int(p.rate/4), 1)
		l = rate.NewLimiter(rate.Limit(p.rate), burst)
		p.limiters[endpoint] = l
	}
	return l
}

// ConnectRDS runs attempt, which connects to the rds-iam resource res with
// token as the password, until it succeeds or fails for good. attempt
// reports refused when the server rejected the token (PostgreSQL 28P01 or
// 28000, MySQL 1045): a cached token is then replaced by a fresh one once.
// Network failures are retried with a short backoff. Attempts are paced by
// the endpoint's rate limit. Errors never contain the token.
func (p *Provider) ConnectRDS(ctx context.Context, res *config.Resource, attempt func(ctx context.Context, token string) (refused bool, err error)) error {
	k := tokenKey{endpoint: res.Address, region: res.Auth.Region, user: res.User, role: res.Auth.AssumeRoleARN}
	lim := p.limiter(res.Address)
	fresh := false
	backoff := 100 * time.Millisecond
	var last error
	for range rdsAttempts {
		if err := lim.Wait(ctx); err != nil {
			if last != nil {
				return last
			}
			return &Error{Action: "rds-db:connect", Code: "RateLimited", Err: err, Msg: fmt.Sprintf(
				"too many new connections to %s: this gateway opens at most %g IAM-authenticated connections per second to one RDS endpoint (aws.rds_connect_rate)", res.Address, p.rate)}
		}
		tok, cached, err := p.token(ctx, k, fresh)
		if err != nil {
			return err
		}
		refused, err := attempt(ctx, tok)
		if err == nil {
			return nil
		}
		err = scrub(err, tok)
		if refused {
			p.forget(k, tok)
			if cached {
				// The cached token may have outlived its credentials or
				// the server's view of the clock: try once with a new one.
				fresh = true
				last = rdsRefused(res, err)
				continue
			}
			return rdsRefused(res, err)
		}
		last = err
		if !transient(err) || ctx.Err() != nil {
			return err
		}
		jitter := time.Duration(rand.Int64N(int64(backoff)))
		select {
		case <-time.After(backoff + jitter):
		case <-ctx.Done():
			return err
		}
		backoff *= 2
	}
	return last
}

// rdsRefused explains a token the database did not accept.
func rdsRefused(res *config.Resource, err error) *Error {
	host, _, _ := net.SplitHostPort(res.Address)
	setup := "the user must have the rds_iam role (GRANT rds_iam TO " + res.User + ")"
	if res.Protocol == "mysql" {
		setup = "the user must be IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS'"
	}
	return &Error{Action: "rds-db:connect", Code: "TokenRefused", Err: err, Msg: fmt.Sprintf(
		"the database %s refused the gateway's IAM token for user %s (%s). The gateway's AWS identity needs rds-db:connect on arn:%s:rds-db:%s:<account>:dbuser:<DbiResourceId>/%s, IAM database authentication must be on, and %s; see docs/aws.md",
		host, res.User, serverMessage(err), partition(res.Auth.Region), res.Auth.Region, res.User, setup)}
}

// serverMessage is the server's own words from a login failure, without
// the driver's wrapping.
func serverMessage(err error) string {
	s := rootCause(err).Error()
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// transient reports whether err is a network failure worth retrying: the
// endpoint refusing or dropping connections (as during a failover), or a
// dial timing out.
func transient(err error) bool {
	var ne net.Error
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// scrub removes tok from err's text, should a driver ever quote its
// password, so the token reaches neither the agent nor the log.
func scrub(err error, tok string) error {
	if tok == "" || !strings.Contains(err.Error(), tok) {
		return err
	}
	return &scrubbed{msg: strings.ReplaceAll(err.Error(), tok, "[IAM token]")}
}

type scrubbed struct{ msg string }

// Error has no Unwrap: the cause's text holds the token.
func (s *scrubbed) Error() string { return s.msg }
