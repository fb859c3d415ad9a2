package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/testenv"
)

// The AWS tests run the gateway with an AWS identity that only the local
// emulators (testenv.AWS) know: RDS fronts in front of a real PostgreSQL
// and MariaDB, the EC2 Instance Connect API feeding a real sshd's
// AuthorizedKeysCommand, and an EC2 Instance Connect Endpoint tunnelling
// to that sshd. Nothing reaches AWS.

const (
	awsInstance = "i-0123456789abcdef0"
	awsEICE     = "eice-0123456789abcdef0"
)

// awsConfig is the gateway's aws: block for the emulator.
func awsConfig(a *testenv.AWS) string {
	return fmt.Sprintf("aws:\n  endpoint_url: %s\n  ca_file: %s\n", a.URL, a.CAFile)
}

// rdsResource is an rds-iam resource; the emulator's CA stands in for the
// RDS bundle (tls.ca_file).
func rdsResource(name, protocol, addr, user, region, caFile string) string {
	return fmt.Sprintf(`  - name: %s
    protocol: %s
    address: %s
    database: app
    user: %s
    auth: { type: rds-iam, region: %s }
    tls: { mode: verify-full, ca_file: %s }
`, name, protocol, addr, user, region, caFile)
}

// grant creates an active grant for agent-1 on resource.
func (g *gateway) grant(resource, task string, flags ...string) control.Issued {
	g.t.Helper()
	var iss control.Issued
	g.CLIJSON(&iss, "alice", append([]string{"grants", "create", "--agent", "agent-1", "--resource", resource, "--task", task}, flags...)...)
	if iss.Grant.State != "active" {
		g.t.Fatalf("grant: %+v", iss.Grant)
	}
	return iss
}

// sessionJSON is everything recorded of the newest session on resource.
func (g *gateway) sessionJSON(resource string) (control.SessionDetail, string) {
	g.t.Helper()
	d := g.lastSession(resource)
	b, _ := json.Marshal(d)
	return d, string(b)
}

// secretsLeaked lists the secrets that appear in any of texts.
func secretsLeaked(secrets []string, texts ...string) []string {
	var out []string
	for _, s := range secrets {
		// The signature is what makes a token usable; a public key's
		// base64 is what identifies it.
		needle := s
		if i := strings.Index(s, "X-Amz-Signature="); i >= 0 {
			needle = s[i+len("X-Amz-Signature="):]
		} else if f := strings.Fields(s); len(f) > 1 {
			needle = f[1]
		}
		for _, t := range texts {
			if strings.Contains(t, needle) {
				out = append(out, needle)
			}
		}
	}
	return out
}

func refusedBecause(t *testing.T, f *testenv.RDSFront, why string) {
	t.Helper()
	l := f.Logins()
	if len(l) == 0 || !strings.Contains(l[len(l)-1].Refused, why) {
		t.Errorf("the RDS front's last login %+v, want it refused because %q", l, why)
	}
}

// TestAWSRDSPostgres: psql through the gateway to an RDS PostgreSQL with
// an IAM token the gateway mints; tokens for another host, region or user
// are refused, as is an expired one; the agent never sees a token.
func TestAWSRDSPostgres(t *testing.T) {
	a := testenv.StartAWS(t, testenv.AWSOptions{})
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Database: "app", InitSQL: testenv.SampleSchema})
	front := a.StartRDSPostgres(t, pg, "app_iam")
	_, port, _ := net.SplitHostPort(front.Addr)
	g := startGateway(t, gatewayOptions{
		Resources: rdsResource("orders-db", "postgres", front.Addr, "app_iam", "us-east-1", a.CAFile) +
			rdsResource("orders-wronghost", "postgres", "localhost:"+port, "app_iam", "us-east-1", a.CAFile) +
			rdsResource("orders-wrongregion", "postgres", front.Addr, "app_iam", "us-west-2", a.CAFile) +
			rdsResource("orders-nouser", "postgres", front.Addr, "app_nobody", "us-east-1", a.CAFile),
		Config: awsConfig(a),
		Env:    a.Env(),
	})
	iss := g.grant("orders-db", "INC-80: count customers on RDS", "--access", "read")
	out, err := g.psql("agent-1", iss.Token, "orders-db", "select 'n=' || count(*) from customers;\n")
	if err != nil || !strings.Contains(out, "n=") {
		t.Fatalf("psql through the RDS front: %v\n%s", err, out)
	}
	if l := front.Logins(); len(l) != 1 || l[0].User != "app_iam" || l[0].Refused != "" {
		t.Fatalf("the front saw %+v, want one accepted IAM login as app_iam", l)
	}
	out2, err := g.psql("agent-1", iss.Token, "orders-db", "select 1;\n")
	if err != nil {
		t.Fatalf("second connection: %v\n%s", err, out2)
	}
	if tok := front.Tokens(); len(tok) != 2 || tok[0] != tok[1] {
		t.Errorf("the second connection within ten minutes did not reuse the cached token")
	}
	_, rec := g.sessionJSON("orders-db")
	if leaked := secretsLeaked(front.Tokens(), out, out2, rec, g.Log()); len(leaked) > 0 {
		t.Errorf("an IAM token reached the agent, the record or the log: %q", leaked)
	}

	for _, c := range []struct{ resource, why string }{
		{"orders-wronghost", "signed for host localhost:" + port},
		{"orders-wrongregion", "signed for region us-west-2"},
		{"orders-nouser", "user app_nobody is not set up for IAM"},
	} {
		t.Run(c.resource, func(t *testing.T) {
			iss := g.grant(c.resource, "INC-81: a misconfigured RDS resource", "--access", "read")
			out, err := g.psql("agent-1", iss.Token, c.resource, "select 1;\n")
			if err == nil || !strings.Contains(out, "refused the gateway's IAM token") || !strings.Contains(out, "rds-db:connect") || !strings.Contains(out, "rds_iam") {
				t.Fatalf("psql to %s: %v\n%s", c.resource, err, out)
			}
			t.Logf("the agent sees: %s", strings.TrimSpace(out))
			refusedBecause(t, front, c.why)
			d := g.lastSession(c.resource)
			if !strings.Contains(d.Summary.EndReason, "upstream connection failed") || !strings.Contains(d.Summary.EndReason, "refused the gateway's IAM token") {
				t.Errorf("session end recorded as %q", d.Summary.EndReason)
			}
		})
	}

	t.Run("expired", func(t *testing.T) {
		// RDS's clock moves 16 minutes on: the cached token and a fresh
		// one (signed by the gateway's clock) are both past 15 minutes.
		a.Clock.Advance(16 * time.Minute)
		out, err := g.psql("agent-1", iss.Token, "orders-db", "select 1;\n")
		if err == nil || !strings.Contains(out, "refused the gateway's IAM token") {
			t.Fatalf("psql with an expired token: %v\n%s", err, out)
		}
		l := front.Logins()
		if len(l) < 2 || !strings.Contains(l[len(l)-1].Refused, "ExpiredToken") || !strings.Contains(l[len(l)-2].Refused, "ExpiredToken") {
			t.Errorf("want the cached token and a fresh one refused as expired: %+v", l)
		}
		a.Clock.Reset()
		if out, err := g.psql("agent-1", iss.Token, "orders-db", "select 1;\n"); err != nil {
			t.Fatalf("once the clocks agree again: %v\n%s", err, out)
		}
	})
}

// TestAWSRDSMySQL: the mysql client through the gateway to an RDS MySQL
// front: the token goes as mysql_clear_password inside verified TLS.
func TestAWSRDSMySQL(t *testing.T) {
	a := testenv.StartAWS(t, testenv.AWSOptions{})
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{Database: "app", InitSQL: testenv.SampleSchemaMySQL})
	front := a.StartRDSMySQL(t, my, "app_iam")
	g := startGateway(t, gatewayOptions{
		MySQL: true,
		Resources: rdsResource("shop-rds", "mysql", front.Addr, "app_iam", "us-east-1", a.CAFile) +
			rdsResource("shop-rds-wrongregion", "mysql", front.Addr, "app_iam", "eu-west-1", a.CAFile),
		Config: awsConfig(a),
		Env:    a.Env(),
	})
	iss := g.grant("shop-rds", "INC-82: count orders on RDS MySQL", "--access", "read")
	out, err := g.mysqlCLI("agent-1", iss.Token, "shop-rds", "select concat('n=', count(*)) from orders;\n")
	if err != nil || !strings.Contains(out, "n=") {
		t.Fatalf("mysql through the RDS front: %v\n%s\nfront: %+v", err, out, front.Logins())
	}
	if l := front.Logins(); len(l) == 0 || l[len(l)-1].User != "app_iam" || l[len(l)-1].Refused != "" {
		t.Fatalf("the front saw %+v", l)
	}
	_, rec := g.sessionJSON("shop-rds")
	if leaked := secretsLeaked(front.Tokens(), out, rec, g.Log()); len(leaked) > 0 {
		t.Errorf("an IAM token reached the agent, the record or the log: %q", leaked)
	}

	bad := g.grant("shop-rds-wrongregion", "INC-83: wrong region", "--access", "read")
	out, err = g.mysqlCLI("agent-1", bad.Token, "shop-rds-wrongregion", "select 1;\n")
	if err == nil || !strings.Contains(out, "refused the gateway's IAM token") || !strings.Contains(out, "AWSAuthenticationPlugin") {
		t.Fatalf("mysql with a token for another region: %v\n%s", err, out)
	}
	t.Logf("the agent sees: %s", strings.TrimSpace(out))
	refusedBecause(t, front, "signed for region eu-west-1")
	if d := g.lastSession("shop-rds-wrongregion"); !strings.Contains(d.Summary.EndReason, "refused the gateway's IAM token") {
		t.Errorf("session end recorded as %q", d.Summary.EndReason)
	}
}

// TestAWSInstanceConnect: ssh through the gateway to an instance reached
// directly and to one behind an EC2 Instance Connect Endpoint, each with a
// key the gateway makes and pushes for the session; a key used after 60
// seconds and AWS's refusals reach the agent as clear errors and are
// recorded.
func TestAWSInstanceConnect(t *testing.T) {
	a := testenv.StartAWS(t, testenv.AWSOptions{})
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{ExtraConfig: a.SSHDConfig(t, awsInstance)})
	a.AddInstance(awsInstance, "us-east-1a")
	a.AddEICE(t, awsEICE, sshd.Addr())
	res := func(name, extra string) string {
		return fmt.Sprintf(`  - name: %s
    protocol: ssh
    address: %s
    user: %s
    auth: { type: ec2-instance-connect, instance_id: %s, region: us-east-1, availability_zone: us-east-1a%s }
    host_key: %q
`, name, sshd.Addr(), sshd.User, awsInstance, extra, sshd.HostKey)
	}
	g := startGateway(t, gatewayOptions{
		SSH:       true,
		Resources: res("web-1", "") + res("web-private", ", endpoint: { type: eice, id: "+awsEICE+" }"),
		Config:    awsConfig(a),
		Env:       a.Env(),
	})

	for _, c := range []struct{ resource, via string }{
		{"web-1", "ec2-instance-connect:SendSSHPublicKey " + awsInstance + " " + sshd.User + ": ok"},
		{"web-private", "ec2-instance-connect:OpenTunnel " + awsEICE + " to " + sshd.Addr() + ": ok"},
	} {
		t.Run(c.resource, func(t *testing.T) {
			g.grant(c.resource, "INC-84: check the web box", "--command", "echo *")
			r := g.sshAs(c.resource, g.keyAuth(), "", "echo", "hello-from-"+c.resource)
			if r.code != 0 || !strings.Contains(r.stdout, "hello-from-"+c.resource) {
				t.Fatalf("ssh %s: exit %d, stdout %q, stderr %q\ncalls:\n%s\nsshd:\n%s", c.resource, r.code, r.stdout, r.stderr, strings.Join(a.Calls(), "\n"), sshd.Log())
			}
			calls := strings.Join(a.Calls(), "\n")
			for _, want := range []string{c.via, "sshd asked for " + sshd.User + "'s keys: 1 active"} {
				if !strings.Contains(calls, want) {
					t.Errorf("the emulator did not see %q:\n%s", want, calls)
				}
			}
			_, rec := g.sessionJSON(c.resource)
			if leaked := secretsLeaked(a.PushedKeys(), r.stdout, r.stderr, rec); len(leaked) > 0 {
				t.Errorf("the session key reached the agent or the record: %q", leaked)
			}
		})
	}
	if !strings.Contains(strings.Join(a.Calls(), "\n"), "ec2:DescribeInstanceConnectEndpoints "+awsEICE+": ok") {
		t.Errorf("the endpoint's DNS name was not looked up")
	}

	t.Run("key used after 60 seconds", func(t *testing.T) {
		a.AdvanceAfterPush(testenv.KeyValidity + time.Second)
		defer a.Clock.Reset()
		defer a.AdvanceAfterPush(0)
		r := g.sshAs("web-1", g.keyAuth(), "", "echo", "should-not-run")
		if r.code != 255 || strings.Contains(r.stdout, "should-not-run") || !strings.Contains(r.stderr, "refused the key pushed with EC2 Instance Connect") {
			t.Fatalf("late login: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		t.Logf("the agent sees: %s", strings.TrimSpace(r.stderr))
		if calls := strings.Join(a.Calls(), "\n"); !strings.Contains(calls, "0 active") {
			t.Errorf("sshd was not told the key had expired:\n%s", calls)
		}
		if d := g.lastSession("web-1"); !strings.Contains(d.Summary.EndReason, "refused the key pushed with EC2 Instance Connect") {
			t.Errorf("session end recorded as %q", d.Summary.EndReason)
		}
	})

	for _, c := range []struct{ name, action, resource, want string }{
		{"SendSSHPublicKey denied", "ec2-instance-connect:SendSSHPublicKey", "web-1", "AWS denied ec2-instance-connect:SendSSHPublicKey on arn:aws:ec2:us-east-1:<account>:instance/" + awsInstance},
		{"OpenTunnel denied", "ec2-instance-connect:OpenTunnel", "web-private", "AWS denied ec2-instance-connect:OpenTunnel"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a.Deny(c.action)
			defer a.Allow(c.action)
			r := g.sshAs(c.resource, g.keyAuth(), "", "echo", "should-not-run")
			if r.code != 255 || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("ssh with %s: exit %d, stderr %q", c.name, r.code, r.stderr)
			}
			t.Logf("the agent sees: %s", strings.TrimSpace(r.stderr))
			d := g.lastSession(c.resource)
			if !strings.Contains(d.Summary.EndReason, c.want) {
				t.Errorf("session end recorded as %q", d.Summary.EndReason)
			}
			st, _ := findStatement(t, d.Events, "UPSTREAM", "connect ")
			if st.Decision != "deny" || !strings.Contains(st.Reason, c.action) {
				t.Errorf("the refused connection recorded as %+v", st)
			}
		})
	}
}

// TestAWSMissingCredentials: a gateway without any AWS identity starts,
// warns, and tells the agent (and the record) what is missing for each
// AWS resource.
func TestAWSMissingCredentials(t *testing.T) {
	a := testenv.StartAWS(t, testenv.AWSOptions{})
	dir := t.TempDir()
	hostKey := strings.TrimSpace(testenv.NewSSHKey(t, filepath.Join(dir, "some_host_key")))
	g := startGateway(t, gatewayOptions{
		SSH: true,
		Resources: rdsResource("orders-db", "postgres", "127.0.0.1:1", "app_iam", "us-east-1", a.CAFile) + fmt.Sprintf(`  - name: web-1
    protocol: ssh
    address: 127.0.0.1:1
    user: ec2-user
    auth: { type: ec2-instance-connect, instance_id: %s, region: us-east-1 }
    host_key: %q
`, awsInstance, hostKey),
		Config: awsConfig(a),
		Env:    testenv.AWSIsolatedEnv(dir),
	})
	if !waitFor(10*time.Second, func() bool { return strings.Contains(g.Log(), "AWS resources will refuse sessions") }) {
		t.Errorf("the gateway did not warn at start:\n%s", g.Log())
	}

	iss := g.grant("orders-db", "INC-85: no credentials", "--access", "read")
	out, err := g.psql("agent-1", iss.Token, "orders-db", "select 1;\n")
	if err == nil || !strings.Contains(out, "no AWS credentials") || !strings.Contains(out, "rds-db:connect") {
		t.Fatalf("psql without AWS credentials: %v\n%s", err, out)
	}
	t.Logf("the agent sees: %s", strings.TrimSpace(out))
	if d := g.lastSession("orders-db"); !strings.Contains(d.Summary.EndReason, "no AWS credentials") {
		t.Errorf("session end recorded as %q", d.Summary.EndReason)
	}

	g.grant("web-1", "INC-85: no credentials", "--command", "echo *")
	r := g.sshAs("web-1", g.keyAuth(), "", "echo", "x")
	if r.code != 255 || !strings.Contains(r.stderr, "no AWS credentials") || !strings.Contains(r.stderr, "ec2-instance-connect:SendSSHPublicKey") {
		t.Fatalf("ssh without AWS credentials: exit %d, stderr %q", r.code, r.stderr)
	}
	t.Logf("the agent sees: %s", strings.TrimSpace(r.stderr))
	if d := g.lastSession("web-1"); !strings.Contains(d.Summary.EndReason, "no AWS credentials") {
		t.Errorf("session end recorded as %q", d.Summary.EndReason)
	}
	if calls := a.Calls(); len(calls) != 0 {
		t.Errorf("the emulator was called without credentials: %q", calls)
	}
}
