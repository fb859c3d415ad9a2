package awsauth

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/testenv"
)

// isolate gives the test process the environment of a gateway with the
// emulator's identity (or none, with a nil a): no shared config, no
// instance metadata service.
func isolate(t *testing.T, a *testenv.AWS) {
	env := testenv.AWSIsolatedEnv(t.TempDir())
	if a != nil {
		env = a.Env()
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func rdsResource() *config.Resource {
	return &config.Resource{Name: "orders-db", Protocol: "postgres", Address: "orders.cluster-abc.us-east-1.rds.amazonaws.com:5432",
		User: "airlock_ro", Auth: config.Auth{Type: "rds-iam", Region: "us-east-1"}}
}

func TestEmbeddedRDSRoots(t *testing.T) {
	var subjects []string
	rest := rdsBundle
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if !c.IsCA || time.Now().After(c.NotAfter) {
			t.Errorf("%s: CA %v, expires %s", c.Subject, c.IsCA, c.NotAfter)
		}
		subjects = append(subjects, c.Subject.CommonName)
	}
	if len(subjects) < 80 {
		t.Errorf("only %d certificates embedded", len(subjects))
	}
	all := strings.Join(subjects, "\n")
	for _, want := range []string{"Amazon RDS us-east-1 Root CA RSA2048 G1", "Amazon RDS eu-west-1 Root CA ECC384 G1", "Amazon Root CA 1"} {
		if !strings.Contains(all, want) {
			t.Errorf("the bundle lacks %q", want)
		}
	}
	if RDSRoots() == nil {
		t.Fatal("no pool")
	}
}

// TestTokenCache: a token is reused for ten minutes, then minted again;
// a refused cached token is replaced once; a refused fresh one is an
// error that names rds-db:connect and the database setup, never the
// token.
func TestTokenCache(t *testing.T) {
	a := testenv.StartAWS(t, testenv.AWSOptions{})
	isolate(t, a)
	clk := &fakeClock{t: time.Now()}
	p, err := New(Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	res := rdsResource()
	ctx := context.Background()
	k := tokenKey{endpoint: res.Address, region: "us-east-1", user: res.User}
	tok, cached, err := p.token(ctx, k, false)
	if err != nil || cached {
		t.Fatalf("first token: cached %v, %v", cached, err)
	}
	for _, want := range []string{res.Address, "Action=connect", "DBUser=airlock_ro", "X-Amz-Expires=900", "%2Fus-east-1%2Frds-db%2Faws4_request", a.AccessKeyID} {
		if !strings.Contains(tok, want) {
			t.Errorf("token %q lacks %q", tok, want)
		}
	}
	clk.Advance(9 * time.Minute)
	if again, cached, _ := p.token(ctx, k, false); !cached || again != tok {
		t.Errorf("a 9-minute-old token was not reused")
	}
	clk.Advance(time.Minute + time.Second)
	if _, cached, _ := p.token(ctx, k, false); cached {
		t.Errorf("a token past 10 minutes was reused")
	}

	// A refused cached token: one retry with a fresh token.
	var calls []bool
	err = p.ConnectRDS(ctx, res, func(_ context.Context, tok string) (bool, error) {
		calls = append(calls, true)
		if len(calls) == 1 {
			return true, errors.New(`FATAL: PAM authentication failed for user "airlock_ro" (SQLSTATE 28P01)`)
		}
		return false, nil
	})
	if err != nil || len(calls) != 2 {
		t.Fatalf("refused cached token: %d attempts, %v", len(calls), err)
	}

	// Refused every time: a clear error, no token in it.
	var seen []string
	err = p.ConnectRDS(ctx, res, func(_ context.Context, tok string) (bool, error) {
		seen = append(seen, tok)
		return true, fmt.Errorf(`FATAL: PAM authentication failed for user "airlock_ro" (password %s)`, tok)
	})
	var e *Error
	if !errors.As(err, &e) || e.Code != "TokenRefused" {
		t.Fatalf("refused token: %v", err)
	}
	for _, want := range []string{"rds-db:connect", "arn:aws:rds-db:us-east-1:<account>:dbuser:<DbiResourceId>/airlock_ro", "rds_iam", "PAM authentication failed"} {
		if !strings.Contains(e.Error(), want) {
			t.Errorf("error %q lacks %q", e, want)
		}
	}
	logged := e.LogValue().String()
	for _, tok := range seen {
		if strings.Contains(e.Error(), tok) || strings.Contains(logged, tok) {
			t.Errorf("the token leaked into the error: %q / %q", e, logged)
		}
	}
	if len(seen) != 2 {
		t.Errorf("%d attempts for a refused token, want 2 (cached, then fresh)", len(seen))
	}
}

// TestConnectRDSRetriesNetworkFailures: a refused TCP connection (an RDS
// failover) is retried; other failures are not.
func TestConnectRDSRetriesNetworkFailures(t *testing.T) {
	a := testenv.StartAWS(t, testenv.AWSOptions{})
	isolate(t, a)
	p, _ := New(Options{})
	n := 0
	err := p.ConnectRDS(context.Background(), rdsResource(), func(context.Context, string) (bool, error) {
		n++
		if n < 3 {
			return false, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
		}
		return false, nil
	})
	if err != nil || n != 3 {
		t.Fatalf("%d attempts, %v", n, err)
	}
	n = 0
	err = p.ConnectRDS(context.Background(), rdsResource(), func(context.Context, string) (bool, error) {
		n++
		return false, errors.New(`database "nope" does not exist`)
	})
	if err == nil || n != 1 {
		t.Fatalf("a permanent failure was tried %d times: %v", n, err)
	}
}

// TestConnectRDSRateLimit: past aws.rds_connect_rate, a connection waits,
// and one whose deadline comes first fails saying so.
func TestConnectRDSRateLimit(t *testing.T) {
	a := testenv.StartAWS(t, testenv.AWSOptions{})
	isolate(t, a)
	p, _ := New(Options{RDSConnectRate: 0.5})
	ok := func(context.Context, string) (bool, error) { return false, nil }
	if err := p.ConnectRDS(context.Background(), rdsResource(), ok); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := p.ConnectRDS(ctx, rdsResource(), ok)
	if err == nil || !strings.Contains(err.Error(), "aws.rds_connect_rate") {
		t.Fatalf("second connection within the limit: %v", err)
	}
}

// TestNoCredentials: with no identity anywhere, every operation fails
// naming the cause and the IAM action.
func TestNoCredentials(t *testing.T) {
	isolate(t, nil)
	p, _ := New(Options{})
	err := p.ConnectRDS(context.Background(), rdsResource(), func(context.Context, string) (bool, error) {
		t.Fatal("attempted without a token")
		return false, nil
	})
	var e *Error
	if !errors.As(err, &e) || e.Code != "NoCredentials" || !strings.Contains(e.Msg, "no AWS credentials") || !strings.Contains(e.Msg, "rds-db:connect") {
		t.Fatalf("ConnectRDS without credentials: %v", err)
	}
	_, err = p.PushKey(context.Background(), ec2Resource("i-0123456789abcdef0", ""))
	if !errors.As(err, &e) || e.Code != "NoCredentials" || !strings.Contains(e.Msg, "ec2-instance-connect:SendSSHPublicKey") {
		t.Fatalf("PushKey without credentials: %v", err)
	}
	if err := p.Check(context.Background(), "us-east-1"); err == nil {
		t.Fatal("Check found credentials")
	}
}

func ec2Resource(instance, role string) *config.Resource {
	return &config.Resource{Name: "web-1", Protocol: "ssh", Address: "127.0.0.1:22", User: "ec2-user",
		Auth: config.Auth{Type: "ec2-instance-connect", Region: "us-east-1", InstanceID: instance, AssumeRoleARN: role, AvailabilityZone: "us-east-1a"}}
}

// TestPushKey: against the emulated API, a key is pushed for the
// resource's user, through an assumed role when configured; refusals say
// what the gateway's identity lacks.
func TestPushKey(t *testing.T) {
	a := testenv.StartAWS(t, testenv.AWSOptions{})
	isolate(t, a)
	const instance = "i-0123456789abcdef0"
	a.AddInstance(instance, "us-east-1a")
	role := "arn:aws:iam::123456789012:role/airlock-ec2"
	a.AddRole(role)
	p, err := New(Options{EndpointURL: a.URL, CAFile: a.CAFile, SessionName: "airlock-test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, r := range []string{"", role} {
		s, err := p.PushKey(ctx, ec2Resource(instance, r))
		if err != nil {
			t.Fatalf("role %q: %v", r, err)
		}
		pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
		keys := a.PushedKeys()
		if len(keys) == 0 || keys[len(keys)-1] != pub || s.PublicKey().Type() != ssh.KeyAlgoED25519 {
			t.Errorf("pushed %q, want %q", keys, pub)
		}
	}
	if calls := strings.Join(a.Calls(), "\n"); !strings.Contains(calls, "sts:AssumeRole "+role+" as airlock-test: ok") {
		t.Errorf("the role was not assumed:\n%s", calls)
	}

	cases := []struct {
		name  string
		res   *config.Resource
		setup func()
		want  []string
	}{
		{name: "denied", res: ec2Resource(instance, ""), setup: func() { a.Deny("ec2-instance-connect:SendSSHPublicKey") },
			want: []string{"AWS denied ec2-instance-connect:SendSSHPublicKey on arn:aws:ec2:us-east-1:<account>:instance/" + instance, "allow ec2-instance-connect:SendSSHPublicKey"}},
		{name: "throttled", res: ec2Resource(instance, ""), setup: func() { a.Throttle("ec2-instance-connect:SendSSHPublicKey", 10) },
			want: []string{"AWS is throttling ec2-instance-connect:SendSSHPublicKey (ThrottlingException)"}},
		{name: "no such instance", res: ec2Resource("i-00000000000000001", ""), want: []string{"EC2 instance", "was not found"}},
		{name: "role not assumable", res: ec2Resource(instance, "arn:aws:iam::123456789012:role/nope"),
			want: []string{"AWS denied sts:AssumeRole on arn:aws:iam::123456789012:role/nope"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer a.Allow("ec2-instance-connect:SendSSHPublicKey")
			defer a.Throttle("ec2-instance-connect:SendSSHPublicKey", 0)
			if c.setup != nil {
				c.setup()
			}
			_, err := p.PushKey(ctx, c.res)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(e.Error(), w) {
					t.Errorf("%q lacks %q", e, w)
				}
			}
		})
	}
}

// TestDialEICE: the tunnel carries a TCP stream to the resource's
// address, the endpoint's DNS name found with
// DescribeInstanceConnectEndpoints; denials name the action.
func TestDialEICE(t *testing.T) {
	a := testenv.StartAWS(t, testenv.AWSOptions{})
	isolate(t, a)
	echo := echoServer(t)
	e := a.AddEICE(t, "eice-0123456789abcdef0", echo)
	p, err := New(Options{EndpointURL: a.URL, CAFile: a.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	res := ec2Resource("i-0123456789abcdef0", "")
	res.Address = echo
	res.Auth.Endpoint = &config.Endpoint{Type: "eice", ID: e.ID}
	ctx := context.Background()
	nc, err := p.DialEICE(ctx, res)
	if err != nil {
		t.Fatalf("%v (calls %q)", err, a.Calls())
	}
	if _, err := io.WriteString(nc, "hello through the endpoint\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(nc).ReadString('\n')
	if err != nil || line != "hello through the endpoint\n" {
		t.Fatalf("echo %q %v", line, err)
	}
	nc.Close()
	if calls := strings.Join(a.Calls(), "\n"); !strings.Contains(calls, "ec2:DescribeInstanceConnectEndpoints "+e.ID+": ok") {
		t.Errorf("the endpoint's DNS name was not looked up:\n%s", calls)
	}

	a.Deny("ec2-instance-connect:OpenTunnel")
	_, err = p.DialEICE(ctx, res)
	a.Allow("ec2-instance-connect:OpenTunnel")
	if err == nil || !strings.Contains(err.Error(), "ec2-instance-connect:OpenTunnel") || !strings.Contains(err.Error(), "denied") {
		t.Errorf("denied tunnel: %v", err)
	}

	p2, _ := New(Options{EndpointURL: a.URL, CAFile: a.CAFile})
	a.Deny("ec2:DescribeInstanceConnectEndpoints")
	_, err = p2.DialEICE(ctx, res)
	if err == nil || !strings.Contains(err.Error(), "ec2:DescribeInstanceConnectEndpoints") || !strings.Contains(err.Error(), "dns_name") {
		t.Errorf("denied lookup: %v", err)
	}
	res.Auth.Endpoint.DNSName = e.DNSName
	nc, err = p2.DialEICE(ctx, res)
	if err != nil {
		t.Fatalf("with dns_name set, no lookup is needed: %v", err)
	}
	nc.Close()
}

func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func TestClassify(t *testing.T) {
	cases := []struct{ code, want string }{
		{"AccessDeniedException", "AWS denied X on R to the gateway's identity (AccessDeniedException): allow X"},
		{"UnauthorizedOperation", "AWS denied X"},
		{"ThrottlingException", "AWS is throttling X"},
		{"RequestLimitExceeded", "AWS is throttling X"},
		{"ExpiredTokenException", "did not accept the gateway's credentials"},
		{"EC2InstanceStateInvalidException", "is not running"},
		{"SomethingNew", "AWS refused X on R: SomethingNew: detail"},
	}
	for _, c := range cases {
		e := classify(&smithy.GenericAPIError{Code: c.code, Message: "detail"}, "X", "R")
		if !strings.Contains(e.Msg, c.want) || e.Code != c.code || e.Action != "X" {
			t.Errorf("%s: %+v, want %q", c.code, e, c.want)
		}
	}
	if e := classify(errors.New("dial tcp: connection refused"), "X", "R"); !strings.Contains(e.Msg, "cannot reach AWS for X") {
		t.Errorf("network error: %q", e.Msg)
	}
}
