package mysql

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/client"
	gomysqlerr "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/pingcap/tidb/pkg/parser/charset"

	"github.com/airlockhq/airlock/awsauth"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/proxy"
)

// upstream is an established connection to the resource, taken over from
// go-mysql's client after its handshake.
type upstream struct {
	conn    net.Conn
	version string
	// sqlMode is the session's sql_mode: it changes how the server reads
	// quotes and backslashes, so the authorizer reads with the same.
	sqlMode string
	caps    uint32 // the flags the gateway asked the upstream for
	thread  uint32 // the upstream's connection id, which its KILL takes
}

// dialUpstream connects to the resource with the gateway's credentials and
// the client's session-relevant capabilities, so both legs speak the same
// packet format. The local-files capability goes upstream only when the
// grant allows file loads.
func (p *Protocol) dialUpstream(ctx context.Context, sess *proxy.Session, resp *response) (*upstream, error) {
	res := sess.Resource()
	var password string
	switch res.Auth.Type {
	case "password":
		password = res.Password()
	case "rds-iam":
		if p.AWS == nil {
			return nil, fmt.Errorf("resource %s: the gateway has no AWS provider for auth type rds-iam", res.Name)
		}
	default:
		return nil, fmt.Errorf("auth type %q is not supported for mysql", res.Auth.Type)
	}
	caps := resp.caps & upstreamCaps
	if !sess.Grant().Scope.AllowFileLoad {
		caps &^= capLocalFiles
	}
	tlsCfg, err := upstreamTLS(res)
	if err != nil {
		return nil, err
	}
	collation := "utf8mb4_general_ci"
	if c, err := charset.GetCollationByID(int(resp.collation)); err == nil {
		collation = c.Name
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	connect := func(ctx context.Context, tlsCfg *tls.Config, password string) (*gomysql.Conn, error) {
		return gomysql.ConnectWithDialer(ctx, "tcp", res.Address, res.User, password, res.Database, p.dialer().DialContext,
			func(c *gomysql.Conn) error {
				// Its buffer serves the connection phase and the
				// gateway's own queries; the relay reads the connection
				// itself (idle.go).
				c.BufferSize = 4 << 10
				// go-mysql asks for these by default; they change the
				// packet format, and the client leg has neither.
				c.UnsetCapability(capDeprecateEOF)
				c.UnsetCapability(capQueryAttributes)
				for _, f := range []uint32{capFoundRows, capIgnoreSpace, capMultiStatements, capMultiResults, capPSMultiResults, capLocalFiles} {
					if caps&f != 0 {
						if err := c.SetCapability(f); err != nil {
							return err
						}
					} else {
						c.UnsetCapability(f)
					}
				}
				if tlsCfg != nil {
					c.SetTLSConfig(tlsCfg)
				}
				c.SetAttributes(map[string]string{
					"_client_name":    "airlock",
					"program_name":    "airlock",
					"airlock_session": sess.ID,
					"airlock_agent":   sess.Grant().Agent,
				})
				return c.SetCollation(collation)
			})
	}
	var conn *gomysql.Conn
	if res.Auth.Type == "rds-iam" {
		// The server switches to mysql_clear_password for an IAM user, and
		// go-mysql answers with the token in clear: only inside TLS that
		// verified the server, never on a plaintext fallback.
		if tlsCfg == nil || tlsCfg.InsecureSkipVerify || res.TLS.Mode != "verify-full" {
			return nil, fmt.Errorf("resource %s: auth type rds-iam needs tls.mode verify-full: refusing to send an IAM token otherwise", res.Name)
		}
		err = p.AWS.ConnectRDS(ctx, res, func(ctx context.Context, token string) (bool, error) {
			conn, err = connect(ctx, tlsCfg, token)
			var me *gomysqlerr.MyError
			return errors.As(err, &me) && me.Code == erAccessDenied, err
		})
	} else {
		conn, err = connect(ctx, tlsCfg, password)
		if err != nil && res.TLS.Mode == "prefer" && tlsCfg != nil && strings.Contains(err.Error(), "does not support TLS") {
			conn, err = connect(ctx, nil, password)
		}
	}
	if err != nil {
		return nil, err
	}
	p.versions.remember(res.Name, conn.GetServerVersion())
	r, err := conn.Execute("SELECT @@SESSION.sql_mode")
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading sql_mode: %w", err)
	}
	sqlMode, err := r.GetString(0, 0)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading sql_mode: %w", err)
	}
	// go-mysql's packet reader reads nothing past the final OK of the
	// handshake (the server sends nothing before a command), so the raw
	// connection can be taken over as is.
	return &upstream{conn: conn.Conn.Conn, version: conn.GetServerVersion(), sqlMode: sqlMode, caps: caps, thread: conn.GetConnectionID()}, nil
}

// status is the server status the client is told at the end of the
// handshake: autocommit, and no backslash escapes when the session's
// sql_mode says so.
func (u *upstream) status() uint16 {
	st := uint16(statusAutocommit)
	for _, m := range strings.Split(u.sqlMode, ",") {
		if strings.EqualFold(strings.TrimSpace(m), "NO_BACKSLASH_ESCAPES") {
			st |= statusNoBackslashEscapes
		}
	}
	return st
}

// upstreamTLS maps the resource's tls.mode (libpq's sslmode words) to a
// TLS configuration; nil means plaintext.
func upstreamTLS(res *config.Resource) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(res.Address)
	if err != nil {
		return nil, err
	}
	var roots *x509.CertPool
	if res.TLS.CAFile != "" {
		pem, err := os.ReadFile(res.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("resource %s: tls.ca_file: %w", res.Name, err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("resource %s: tls.ca_file %s holds no PEM certificate", res.Name, res.TLS.CAFile)
		}
	}
	if roots == nil && res.Auth.Type == "rds-iam" {
		roots = awsauth.RDSRoots()
	}
	switch res.TLS.Mode {
	case "disable":
		return nil, nil
	case "", "prefer", "require":
		return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, nil //nolint:gosec // the modes that do not verify, as in libpq
	case "verify-ca":
		// Verify the chain but not the name, as libpq's verify-ca does.
		return &tls.Config{
			InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyPeerCertificate below
			MinVersion:         tls.VersionTLS12,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 {
					return errors.New("upstream sent no certificate")
				}
				certs := make([]*x509.Certificate, len(raw))
				for i, b := range raw {
					c, err := x509.ParseCertificate(b)
					if err != nil {
						return err
					}
					certs[i] = c
				}
				inter := x509.NewCertPool()
				for _, c := range certs[1:] {
					inter.AddCert(c)
				}
				_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
				return err
			},
		}, nil
	case "verify-full":
		return &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12}, nil
	}
	return nil, fmt.Errorf("resource %s: tls.mode %q is not supported", res.Name, res.TLS.Mode)
}

// RDSAuth runs connection attempts to an rds-iam resource, each with a
// fresh or cached IAM token as the password (awsauth.Provider).
type RDSAuth interface {
	ConnectRDS(ctx context.Context, res *config.Resource, attempt func(ctx context.Context, token string) (refused bool, err error)) error
}
