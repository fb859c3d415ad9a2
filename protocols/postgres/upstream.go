package postgres

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockhq/airlock/config"
)

// relayedParams are the client's startup parameters passed on to the
// upstream: harmless session defaults. Anything else the client sent
// (search_path, role settings, options) is dropped or refused at startup.
var relayedParams = []string{
	"application_name", "client_encoding", "DateStyle", "TimeZone",
	"extra_float_digits", "IntervalStyle", "datestyle", "timezone", "intervalstyle",
}

// upstream is an established connection to the resource.
type upstream struct {
	conn   net.Conn
	params map[string]string
	pid    uint32
	key    []byte
}

// dialUpstream connects to the resource with the gateway's credentials,
// using pgconn for the startup and authentication, then takes the raw
// connection over for the relay.
func dialUpstream(ctx context.Context, res *config.Resource, clientParams map[string]string) (*upstream, error) {
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
	default:
		return nil, fmt.Errorf("auth type %q is not supported for postgres yet", res.Auth.Type)
	}
	// Only what we choose reaches the upstream, whatever PG* variables the
	// gateway's environment holds.
	cfg.RuntimeParams = map[string]string{}
	for _, k := range relayedParams {
		if v, ok := clientParams[k]; ok {
			cfg.RuntimeParams[k] = v
		}
	}
	// The authorizer reads string literals as the SQL standard says; the
	// server must too, whatever its configured default.
	cfg.RuntimeParams["standard_conforming_strings"] = "on"
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	pc, err := pgconn.ConnectConfig(ctx, cfg)
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
