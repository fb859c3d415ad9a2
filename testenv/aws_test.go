package testenv

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	rdsauth "github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/aws/aws-sdk-go-v2/service/ec2instanceconnect"
	"github.com/aws/smithy-go"
	"github.com/coder/websocket"
	gomysql "github.com/go-mysql-org/go-mysql/client"
	gomysqlerr "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/crypto/ssh"
)

// awsCreds are the emulator's identity as an SDK credentials provider;
// secret replaces the secret key when not empty (a forged signature).
func awsCreds(a *AWS, secret string) aws.CredentialsProvider {
	if secret == "" {
		secret = a.SecretAccessKey
	}
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: a.AccessKeyID, SecretAccessKey: secret}, nil
	})
}

func caPool(t *testing.T, a *AWS) *x509.CertPool {
	b, err := os.ReadFile(a.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b)
	return p
}

// TestAWSRDSPostgresFront: the front accepts exactly the tokens RDS
// would, and tells why it refused the others (the client only sees
// RDS's "PAM authentication failed").
func TestAWSRDSPostgresFront(t *testing.T) {
	pg := StartPostgres(t, PostgresOptions{Database: "app"})
	a := StartAWS(t, AWSOptions{})
	f := a.StartRDSPostgres(t, pg, "app_iam", "other_iam")
	ctx := context.Background()
	host, port, _ := net.SplitHostPort(f.Addr)
	token := func(endpoint, region, user, secret string) string {
		tok, err := rdsauth.BuildAuthToken(ctx, endpoint, region, user, awsCreds(a, secret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	connect := func(user, password, sslmode string) error {
		cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s dbname=app sslmode=%s sslrootcert=%s connect_timeout=10", host, port, user, sslmode, a.CAFile))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Password = password
		pc, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer pc.Close(ctx)
		res := pc.ExecParams(ctx, "SELECT current_user::text, 41 + 1", nil, nil, nil, nil).Read()
		if res.Err != nil || len(res.Rows) != 1 || string(res.Rows[0][1]) != "42" {
			t.Fatalf("query through the front: %v %q", res.Err, res.Rows)
		}
		if string(res.Rows[0][0]) != pg.User {
			t.Errorf("the front logged in upstream as %q, want the server's own user %q", res.Rows[0][0], pg.User)
		}
		return nil
	}
	if err := connect("app_iam", token(f.Addr, a.Region, "app_iam", ""), "verify-full"); err != nil {
		t.Fatalf("a good token was refused: %v (logins %+v)", err, f.Logins())
	}
	cases := []struct {
		name, user, password, sslmode, why string
		before                             func()
	}{
		{name: "another host", user: "app_iam", password: token("localhost:"+port, a.Region, "app_iam", ""), why: "signed for host localhost:" + port},
		{name: "another user", user: "other_iam", password: token(f.Addr, a.Region, "app_iam", ""), why: "signed for user app_iam, login as other_iam"},
		{name: "another region", user: "app_iam", password: token(f.Addr, "eu-west-1", "app_iam", ""), why: "signed for region eu-west-1"},
		{name: "wrong secret key", user: "app_iam", password: token(f.Addr, a.Region, "app_iam", "not-the-secret"), why: "SignatureDoesNotMatch"},
		{name: "tampered user", user: "other_iam", password: strings.Replace(token(f.Addr, a.Region, "app_iam", ""), "DBUser=app_iam", "DBUser=other_iam", 1), why: "SignatureDoesNotMatch"},
		{name: "user without IAM", user: "postgres_nobody", password: token(f.Addr, a.Region, "postgres_nobody", ""), why: "not set up for IAM"},
		{name: "not a token", user: "app_iam", password: "hunter2", why: "not an RDS IAM token"},
		{name: "expired", user: "app_iam", password: token(f.Addr, a.Region, "app_iam", ""), why: "ExpiredToken", before: func() { a.Clock.Advance(15*time.Minute + time.Second) }},
		{name: "signed in the future", user: "app_iam", password: token(f.Addr, a.Region, "app_iam", ""), why: "in the future", before: func() { a.Clock.Advance(-10 * time.Minute) }},
		{name: "IAM denies rds-db:connect", user: "app_iam", password: token(f.Addr, a.Region, "app_iam", ""), why: "AccessDenied", before: func() { a.Deny("rds-db:connect") }},
		{name: "no TLS", user: "app_iam", password: token(f.Addr, a.Region, "app_iam", ""), sslmode: "disable", why: "no TLS"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer a.Clock.Reset()
			defer a.Allow("rds-db:connect")
			if c.before != nil {
				c.before()
			}
			if c.sslmode == "" {
				c.sslmode = "verify-full"
			}
			err := connect(c.user, c.password, c.sslmode)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || (pe.Code != "28P01" && pe.Code != "28000") {
				t.Fatalf("want a refused login, got %v", err)
			}
			l := f.Logins()
			if last := l[len(l)-1]; !strings.Contains(last.Refused, c.why) {
				t.Errorf("refused because %q, want %q", last.Refused, c.why)
			}
		})
	}
}

// TestAWSRDSMySQLFront: the MySQL front requires TLS, switches to
// mysql_clear_password and relays a good token's session to MariaDB.
func TestAWSRDSMySQLFront(t *testing.T) {
	my := StartMariaDB(t, MariaDBOptions{Database: "app"})
	a := StartAWS(t, AWSOptions{})
	f := a.StartRDSMySQL(t, my, "app_iam")
	ctx := context.Background()
	tlsCfg := &tls.Config{RootCAs: caPool(t, a), ServerName: "127.0.0.1"}
	connect := func(user, password string, tc *tls.Config) (*gomysql.Conn, error) {
		return gomysql.ConnectWithContext(ctx, f.Addr, user, password, "app", 10*time.Second, func(c *gomysql.Conn) error {
			if tc != nil {
				c.SetTLSConfig(tc)
			}
			return nil
		})
	}
	tok, err := rdsauth.BuildAuthToken(ctx, f.Addr, a.Region, "app_iam", awsCreds(a, ""))
	if err != nil {
		t.Fatal(err)
	}
	c, err := connect("app_iam", tok, tlsCfg)
	if err != nil {
		t.Fatalf("a good token was refused: %v (logins %+v)", err, f.Logins())
	}
	r, err := c.Execute("SELECT CURRENT_USER(), 41 + 1")
	if err != nil {
		t.Fatal(err)
	}
	if who, _ := r.GetString(0, 0); !strings.HasPrefix(who, my.User+"@") {
		t.Errorf("the front logged in upstream as %q, want %s", who, my.User)
	}
	c.Close()

	bad, err := rdsauth.BuildAuthToken(ctx, f.Addr, "eu-west-1", "app_iam", awsCreds(a, ""))
	if err != nil {
		t.Fatal(err)
	}
	_, err = connect("app_iam", bad, tlsCfg)
	var me *gomysqlerr.MyError
	if !errors.As(err, &me) || me.Code != 1045 {
		t.Fatalf("a token for another region: %v", err)
	}
	if l := f.Logins(); !strings.Contains(l[len(l)-1].Refused, "signed for region eu-west-1") {
		t.Errorf("refusal reason %+v", l[len(l)-1])
	}
	_, err = connect("app_iam", tok, nil)
	if !errors.As(err, &me) || me.Code != 3159 {
		t.Fatalf("a login without TLS: %v", err)
	}
}

// TestAWSInstanceConnect: a key pushed with SendSSHPublicKey lets a real
// sshd in for 60 seconds of the emulated clock, and the API checks the
// request's signature and IAM policy.
func TestAWSInstanceConnect(t *testing.T) {
	a := StartAWS(t, AWSOptions{})
	const instance = "i-0123456789abcdef0"
	sshd := StartSSHD(t, SSHDOptions{ExtraConfig: a.SSHDConfig(t, instance)})
	a.AddInstance(instance, a.Region+"a")
	client := func(secret string) *ec2instanceconnect.Client {
		return ec2instanceconnect.New(ec2instanceconnect.Options{
			Region: a.Region, BaseEndpoint: aws.String(a.URL), Credentials: awsCreds(a, secret),
			HTTPClient:       &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool(t, a)}}},
			RetryMaxAttempts: 1,
		})
	}
	newKey := func() ssh.Signer {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		s, _ := ssh.NewSignerFromKey(priv)
		return s
	}
	push := func(c *ec2instanceconnect.Client, s ssh.Signer, id string) error {
		_, err := c.SendSSHPublicKey(context.Background(), &ec2instanceconnect.SendSSHPublicKeyInput{
			InstanceId: aws.String(id), InstanceOSUser: aws.String(sshd.User),
			SSHPublicKey: aws.String(string(ssh.MarshalAuthorizedKey(s.PublicKey()))),
		})
		return err
	}
	login := func(s ssh.Signer) error {
		c, err := ssh.Dial("tcp", sshd.Addr(), &ssh.ClientConfig{User: sshd.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(s)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}) //nolint:gosec // the host key is not under test
		if err == nil {
			c.Close()
		}
		return err
	}
	code := func(err error) string {
		var api smithy.APIError
		if errors.As(err, &api) {
			return api.ErrorCode()
		}
		return fmt.Sprint(err)
	}

	k := newKey()
	if err := login(k); err == nil {
		t.Fatal("a key never pushed got in")
	}
	if err := push(client(""), k, instance); err != nil {
		t.Fatal(err)
	}
	if err := login(k); err != nil {
		t.Fatalf("the pushed key did not get in: %v\n%s", err, sshd.Log())
	}
	a.Clock.Advance(KeyValidity + time.Second)
	if err := login(k); err == nil {
		t.Fatal("the key still got in 61 seconds after the push")
	}
	a.Clock.Reset()

	if err := push(client("forged"), newKey(), instance); code(err) != "InvalidSignatureException" {
		t.Errorf("a request signed with the wrong secret: %v", err)
	}
	if err := push(client(""), newKey(), "i-0000000000000000f"); code(err) != "EC2InstanceNotFoundException" {
		t.Errorf("an unknown instance: %v", err)
	}
	a.Deny("ec2-instance-connect:SendSSHPublicKey")
	if err := push(client(""), newKey(), instance); code(err) != "AccessDeniedException" {
		t.Errorf("a denied push: %v", err)
	}
	a.Allow("ec2-instance-connect:SendSSHPublicKey")
	a.Throttle("ec2-instance-connect:SendSSHPublicKey", 1)
	if err := push(client(""), newKey(), instance); code(err) != "ThrottlingException" {
		t.Errorf("a throttled push: %v", err)
	}
}

// TestAWSEICE: the endpoint tunnels a correctly presigned openTunnel
// websocket to an address of its subnet, and refuses forged, expired and
// denied ones.
func TestAWSEICE(t *testing.T) {
	a := StartAWS(t, AWSOptions{})
	sshd := StartSSHD(t, SSHDOptions{})
	e := a.AddEICE(t, "eice-0123456789abcdef0", sshd.Addr())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool(t, a)}}}
	ip, port, _ := net.SplitHostPort(sshd.Addr())
	open := func(secret, id, target string, at time.Time) (net.Conn, int, error) {
		tip, tport, _ := net.SplitHostPort(target)
		u := fmt.Sprintf("wss://%s/openTunnel?instanceConnectEndpointId=%s&privateIpAddress=%s&remotePort=%s&X-Amz-Expires=60", e.DNSName, id, tip, tport)
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		c, _ := awsCreds(a, secret).Retrieve(context.Background())
		signed, _, err := v4.NewSigner().PresignHTTP(context.Background(), c, req, emptySHA256, "ec2-instance-connect", a.Region, at)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, signed, &websocket.DialOptions{HTTPClient: hc})
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			return nil, status, err
		}
		return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), 101, nil
	}
	nc, _, err := open("", e.ID, sshd.Addr(), time.Now())
	if err != nil {
		t.Fatalf("a good openTunnel URL: %v (calls %q)", err, a.Calls())
	}
	signer, err := ssh.ParsePrivateKey(mustRead(t, sshd.ClientKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, sshd.Addr(), &ssh.ClientConfig{User: sshd.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey()}) //nolint:gosec // not under test
	if err != nil {
		t.Fatalf("ssh through the tunnel: %v", err)
	}
	cl := ssh.NewClient(sc, chans, reqs)
	s, _ := cl.NewSession()
	out, err := s.Output("echo through-the-tunnel")
	if err != nil || strings.TrimSpace(string(out)) != "through-the-tunnel" {
		t.Errorf("command through the tunnel: %q %v", out, err)
	}
	cl.Close()

	for _, c := range []struct {
		name, secret, id, target string
		at                       time.Time
		deny                     bool
		want                     int
	}{
		{name: "forged", secret: "forged", id: e.ID, target: sshd.Addr(), at: time.Now(), want: 403},
		{name: "expired", id: e.ID, target: sshd.Addr(), at: time.Now().Add(-2 * time.Minute), want: 403},
		{name: "another endpoint", id: "eice-0000000000000000f", target: sshd.Addr(), at: time.Now(), want: 400},
		{name: "outside the subnet", id: e.ID, target: net.JoinHostPort(ip, strconv.Itoa(mustAtoi(port)+1)), at: time.Now(), want: 400},
		{name: "denied", id: e.ID, target: sshd.Addr(), at: time.Now(), deny: true, want: 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.deny {
				a.Deny("ec2-instance-connect:OpenTunnel")
				defer a.Allow("ec2-instance-connect:OpenTunnel")
			}
			nc, status, err := open(c.secret, c.id, c.target, c.at)
			if err == nil {
				nc.Close()
			}
			if status != c.want {
				t.Errorf("status %d (%v), want %d", status, err, c.want)
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustAtoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
