package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// RDSFront is an emulated RDS endpoint in front of a real database
// server: it requires TLS, asks for a cleartext password, takes it as an
// RDS IAM token and verifies it as RDS does (SigV4 signature recomputed
// with the emulator's keys, host and port, user, region, signing time,
// 15-minute expiry), then logs in to the real server with that server's
// own credentials and relays the connection.
type RDSFront struct {
	// Addr is the endpoint (127.0.0.1:PORT) tokens must be signed for.
	Addr string

	a        *AWS
	iamUsers map[string]bool

	mu     sync.Mutex
	logins []RDSLogin
	tokens []string
}

// RDSLogin is one login attempt at a front.
type RDSLogin struct {
	User string
	// Refused is why the token was refused; "" for a login that passed.
	Refused string
}

// maxTokenLifetime is how long RDS accepts an IAM token after signing.
const maxTokenLifetime = 15 * time.Minute

// Logins are the login attempts so far, oldest first.
func (f *RDSFront) Logins() []RDSLogin {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]RDSLogin(nil), f.logins...)
}

// Tokens are the tokens presented so far, for tests that check none
// reached the agent.
func (f *RDSFront) Tokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tokens...)
}

func (f *RDSFront) record(user, refused, token string) {
	f.mu.Lock()
	f.logins = append(f.logins, RDSLogin{User: user, Refused: refused})
	if token != "" {
		f.tokens = append(f.tokens, token)
	}
	f.mu.Unlock()
	verdict := "ok"
	if refused != "" {
		verdict = "refused: " + refused
	}
	f.a.logCall("rds-db:connect %s as %s: %s", f.Addr, user, verdict)
}

// checkToken verifies token for a login as user; it returns why it is
// refused, or "".
func (f *RDSFront) checkToken(token, user string) string {
	// HOST:PORT/?Action=connect&... (the AWS CLI's form) or
	// HOST:PORT?Action=connect&... (the Go SDK's): RDS takes both.
	hostport, query, ok := strings.Cut(token, "?")
	hostport = strings.TrimSuffix(hostport, "/")
	if !ok || hostport == "" || strings.Contains(hostport, "/") {
		return "not an RDS IAM token (want HOST:PORT/?Action=connect&DBUser=...&X-Amz-Signature=...)"
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "not an RDS IAM token: " + err.Error()
	}
	p, err := f.a.verifyPresigned(hostport, "/", q)
	if err != nil {
		return err.Error()
	}
	switch {
	case p.service != "rds-db":
		return fmt.Sprintf("token signed for service %s, not rds-db", p.service)
	case p.region != f.a.Region:
		return fmt.Sprintf("token signed for region %s, this database is in %s", p.region, f.a.Region)
	case hostport != f.Addr:
		return fmt.Sprintf("token signed for host %s, this database is %s", hostport, f.Addr)
	case p.query.Get("Action") != "connect":
		return fmt.Sprintf("token Action is %q, not connect", p.query.Get("Action"))
	case p.query.Get("DBUser") != user:
		return fmt.Sprintf("token signed for user %s, login as %s", p.query.Get("DBUser"), user)
	case p.expires > maxTokenLifetime:
		return fmt.Sprintf("token valid for %s, longer than RDS's %s", p.expires, maxTokenLifetime)
	case !f.iamUsers[user]:
		return fmt.Sprintf("user %s is not set up for IAM authentication", user)
	}
	if code := f.a.check("rds-db:connect"); code != "" {
		return fmt.Sprintf("%s: %s is not authorized to perform rds-db:connect as %s", code, p.arn, user)
	}
	return ""
}

func (a *AWS) startFront(t testing.TB, iamUsers []string, serve func(f *RDSFront, c net.Conn)) *RDSFront {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: rds front: %v", err)
	}
	f := &RDSFront{Addr: ln.Addr().String(), a: a, iamUsers: map[string]bool{}}
	for _, u := range iamUsers {
		f.iamUsers[u] = true
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(f, c)
				c.Close()
				mu.Lock()
				delete(open, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return f
}

// relay copies between the client and the real server until either
// closes.
func relay(client, server net.Conn) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(server, client); server.Close(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, server); client.Close(); done <- struct{}{} }()
	<-done
	<-done
}

// StartRDSPostgres starts an RDS front for pg. iamUsers are the database
// users granted rds_iam; the front logs in to pg as pg.User.
func (a *AWS) StartRDSPostgres(t testing.TB, pg *Postgres, iamUsers ...string) *RDSFront {
	t.Helper()
	tlsCfg := a.serverTLS()
	return a.startFront(t, iamUsers, func(f *RDSFront, c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		var conn net.Conn = c
		be := pgproto3.NewBackend(conn, conn)
		var sm *pgproto3.StartupMessage
		for sm == nil {
			msg, err := be.ReceiveStartupMessage()
			if err != nil {
				return
			}
			switch m := msg.(type) {
			case *pgproto3.SSLRequest:
				if _, err := conn.Write([]byte{'S'}); err != nil {
					return
				}
				tc := tls.Server(c, tlsCfg)
				if err := tc.Handshake(); err != nil {
					return
				}
				conn = tc
				be = pgproto3.NewBackend(conn, conn)
			case *pgproto3.GSSEncRequest:
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return
				}
			case *pgproto3.CancelRequest:
				// Keys are the real server's: pass the request on.
				if up, err := net.DialTimeout("tcp", pg.Addr(), 5*time.Second); err == nil {
					b, _ := m.Encode(nil)
					_, _ = up.Write(b)
					_, _ = io.Copy(io.Discard, up)
					up.Close()
				}
				return
			case *pgproto3.StartupMessage:
				sm = m
			default:
				return
			}
		}
		user, db := sm.Parameters["user"], sm.Parameters["database"]
		fatal := func(code, msg string) {
			be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
			_ = be.Flush()
		}
		if _, isTLS := conn.(*tls.Conn); !isTLS {
			f.record(user, "no TLS", "")
			fatal("28000", fmt.Sprintf("pg_hba.conf rejects connection for host \"127.0.0.1\", user \"%s\", database \"%s\", no encryption", user, db))
			return
		}
		be.Send(&pgproto3.AuthenticationCleartextPassword{})
		if err := be.Flush(); err != nil {
			return
		}
		if err := be.SetAuthType(pgproto3.AuthTypeCleartextPassword); err != nil {
			return
		}
		msg, err := be.Receive()
		if err != nil {
			return
		}
		pw, ok := msg.(*pgproto3.PasswordMessage)
		if !ok {
			fatal("08P01", "expected a password message")
			return
		}
		if why := f.checkToken(pw.Password, user); why != "" {
			f.record(user, why, pw.Password)
			// RDS tells the client no more than this.
			fatal("28P01", fmt.Sprintf("PAM authentication failed for user \"%s\"", user))
			return
		}
		f.record(user, "", pw.Password)
		cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=10", pg.Host, pg.Port, pg.User, db))
		if err != nil {
			fatal("XX000", err.Error())
			return
		}
		cfg.Password = pg.Password
		cfg.RuntimeParams = map[string]string{}
		for k, v := range sm.Parameters {
			if k != "user" && k != "database" {
				cfg.RuntimeParams[k] = v
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		pc, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) {
				fatal(pe.Code, pe.Message)
			} else {
				fatal("08006", err.Error())
			}
			return
		}
		hj, err := pc.Hijack()
		if err != nil {
			fatal("XX000", err.Error())
			return
		}
		be.Send(&pgproto3.AuthenticationOk{})
		for k, v := range hj.ParameterStatuses {
			be.Send(&pgproto3.ParameterStatus{Name: k, Value: v})
		}
		be.Send(&pgproto3.BackendKeyData{ProcessID: hj.PID, SecretKey: hj.SecretKey})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		if err := be.Flush(); err != nil {
			hj.Conn.Close()
			return
		}
		_ = c.SetDeadline(time.Time{})
		relay(conn, hj.Conn)
	})
}
