package postgres

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockhq/airlock/awsauth"
	"github.com/airlockhq/airlock/config"
)

// upstream is an established connection to the resource.
type upstream struct {
	conn   net.Conn
	params map[string]string
	pid    uint32
	key    []byte
}

// RDSAuth runs connection attempts to an rds-iam resource, each with a
// fresh or cached IAM token as the password (awsauth.Provider).
type RDSAuth interface {
	ConnectRDS(ctx context.Context, res *config.Resource, attempt func(ctx context.Context, token string) (refused bool, err error)) error
}

// dialUpstream connects to the resource with the gateway's credentials,
// using pgconn for the startup and authentication, then takes the raw
// connection over for the relay.
// params are the settings of its startup message (upstreamParams).
func (p *Protocol) dialUpstream(ctx context.Context, res *config.Resource, params map[string]string) (*upstream, error) {
	pc, err := p.connect(ctx, res, params)
	if err != nil {
		return nil, err
	}
	hc, err := pc.Hijack()
	if err != nil {
		pc.Close(ctx)
		return nil, err
	}
	return &upstream{conn: hc.Conn, params: hc.ParameterStatuses, pid: hc.PID, key: hc.SecretKey}, nil
}

// connect opens a connection to the resource with the gateway's
// credentials (its password, or an IAM token), with params as the
// settings of its startup message.
func (p *Protocol) connect(ctx context.Context, res *config.Resource, params map[string]string) (*pgconn.PgConn, error) {
	host, port, err := net.SplitHostPort(res.Address)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Set("sslmode", res.TLS.Mode)
	if res.TLS.CAFile != "" {
		q.Set("sslrootcert", res.TLS.CAFile)
	}
	q.Set("connect_timeout", "10")
	u := url.URL{Scheme: "postgres", User: url.User(res.User), Host: net.JoinHostPort(host, port), Path: "/" + res.Database, RawQuery: q.Encode()}
	cfg, err := pgconn.ParseConfig(u.String())
	if err != nil {
		return nil, fmt.Errorf("resource %s: %w", res.Name, err)
	}
	switch res.Auth.Type {
	case "password":
		cfg.Password = res.Password()
	case "rds-iam":
		if err := rdsTLS(cfg, res); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("auth type %q is not supported for postgres", res.Auth.Type)
	}
	// Only these reach the upstream, whatever PG* variables the gateway's
	// environment holds.
	cfg.RuntimeParams = params
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var pc *pgconn.PgConn
	if res.Auth.Type == "rds-iam" {
		if p.AWS == nil {
			return nil, fmt.Errorf("resource %s: the gateway has no AWS provider for auth type rds-iam", res.Name)
		}
		err = p.AWS.ConnectRDS(ctx, res, func(ctx context.Context, token string) (bool, error) {
			cfg.Password = token
			pc, err = pgconn.ConnectConfig(ctx, cfg)
			cfg.Password = ""
			var pe *pgconn.PgError
			refused := errors.As(err, &pe) && (pe.Code == "28P01" || pe.Code == "28000")
			return refused, err
		})
	} else {
		pc, err = pgconn.ConnectConfig(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	return pc, nil
}

// rdsTLS makes sure an rds-iam connection's only route is TLS with the
// server's certificate and name verified, against tls.ca_file or the
// embedded RDS roots: the token goes in a cleartext password message.
func rdsTLS(cfg *pgconn.Config, res *config.Resource) error {
	if res.TLS.Mode != "verify-full" {
		return fmt.Errorf("resource %s: auth type rds-iam needs tls.mode verify-full, not %q", res.Name, res.TLS.Mode)
	}
	routes := []*tls.Config{cfg.TLSConfig}
	for _, f := range cfg.Fallbacks {
		routes = append(routes, f.TLSConfig)
	}
	for _, t := range routes {
		if t == nil || t.InsecureSkipVerify {
			return fmt.Errorf("resource %s: refusing to send an IAM token over a connection that is not verified TLS", res.Name)
		}
		if res.TLS.CAFile == "" {
			t.RootCAs = awsauth.RDSRoots()
		}
	}
	return nil
}
