package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigLoads(t *testing.T) {
	c, err := Load("../examples/airlock.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Recorder.Mode != "strict" || c.Recorder.PublishTimeout != 2*time.Second || c.Grants.DefaultTTL != time.Hour || c.Grants.RequestTTL != 24*time.Hour {
		t.Errorf("defaults: %+v %+v", c.Recorder, c.Grants)
	}
	if r := c.Resource("demo-pg"); r == nil || r.Protocol != "postgres" || r.TLS.Mode != "prefer" {
		t.Errorf("resource demo-pg: %+v", r)
	}
}

const base = `
listen: { postgres: 127.0.0.1:15432, http: 127.0.0.1:8080 }
identities:
  - { name: agent-1, role: agent, token_sha256: "0000000000000000000000000000000000000000000000000000000000000001" }
resources:
  - { name: demo-pg, protocol: postgres, address: "127.0.0.1:5432", database: app, user: postgres, auth: { type: password, password_env: X } }
`

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown key", base + "bogus: 1\n", "field bogus not found"},
		{"bad mode", base + "recorder: { mode: lax }\n", "recorder.mode"},
		{"bad sign interval", base + "recorder: { sign_interval: 2m }\n", "recorder.sign_interval"},
		{"bad ssh cipher", strings.Replace(base, "http: 127.0.0.1:8080", "http: 127.0.0.1:8080, ssh_ciphers: [aes128-gcm@openssh.com, 3des-cbc]", 1), "listen.ssh_ciphers"},
		{"no http", strings.Replace(base, ", http: 127.0.0.1:8080", "", 1), "listen.http: required"},
		{"bad token hash", strings.Replace(base, `"0000000000000000000000000000000000000000000000000000000000000001"`, "abc", 1), "identities[0].token_sha256"},
		{"bad role", strings.Replace(base, "role: agent", "role: boss", 1), "identities[0].role"},
		{"rds without region", strings.Replace(base, "auth: { type: password, password_env: X }", "auth: { type: rds-iam }", 1), "resources[0].auth.region: required"},
		{"bad protocol", strings.Replace(base, "protocol: postgres", "protocol: oracle", 1), "resources[0].protocol"},
		{"bad address", strings.Replace(base, `"127.0.0.1:5432"`, "nowhere", 1), "resources[0].address"},
		{"ttl above max", base + "grants: { default_ttl: 48h }\n", "grants"},
		{"negative request_ttl", base + "grants: { request_ttl: -1h }\n", "grants.request_ttl: -1h0m0s must be at least 1s"},
		{"tiny request_ttl", base + "grants: { request_ttl: 10ms }\n", "grants.request_ttl: 10ms must be at least 1s"},
		{"negative stop_grace", base + "grants: { stop_grace: -1s }\n", "grants.stop_grace: -1s must be positive and at most 1m"},
		{"long stop_grace", base + "grants: { stop_grace: 5m }\n", "grants.stop_grace: 5m0s must be positive and at most 1m"},
		{"short max_age", base + "recorder: { max_age: 10m }\n", "recorder.max_age"},
		{"negative max_bytes", base + "recorder: { max_bytes: -1 }\n", "recorder.max_bytes"},
		{"negative max_msgs", base + "recorder: { max_msgs: -5 }\n", "recorder.max_msgs"},
		{"tiny max_statement_bytes", base + "recorder: { max_statement_bytes: 100 }\n", "recorder.max_statement_bytes: 100 is out of range"},
		{"huge max_statement_bytes", base + "recorder: { max_statement_bytes: 2147483647 }\n", "recorder.max_statement_bytes"},
		{"sync_always with a cluster", base + "recorder: { nats_url: \"nats://h:4222\", embedded_sync_always: true }\n", "recorder.embedded_sync_always"},
		{"duplicate resource", base + "  - { name: demo-pg, protocol: postgres, address: \"h:1\", database: a, user: u, auth: { type: password, password_env: X } }\n", "resources[1].name"},
		{"rds without verify-full", rds("auth: { type: rds-iam, region: us-east-1 }, tls: { mode: require }"), "resources[1].tls.mode"},
		{"rds with a password", rds("auth: { type: rds-iam, region: us-east-1, password_env: X }"), "resources[1].auth.password_env"},
		{"rds bad region", rds("auth: { type: rds-iam, region: east }"), "resources[1].auth.region"},
		{"rds bad role", rds("auth: { type: rds-iam, region: us-east-1, assume_role_arn: admin }"), "resources[1].auth.assume_role_arn"},
		{"rds with an endpoint", rds("auth: { type: rds-iam, region: us-east-1, endpoint: { type: eice, id: eice-0123456789abcdef0 } }"), "resources[1].auth.endpoint: only used with auth type ec2-instance-connect"},
		{"role on a password resource", strings.Replace(base, "password_env: X }", "password_env: X, assume_role_arn: \"arn:aws:iam::123456789012:role/r\" }", 1), "resources[0].auth.assume_role_arn: only used"},
		{"ec2 bad instance", ec2("instance_id: web-1, region: us-east-1"), "resources[1].auth.instance_id"},
		{"ec2 zone elsewhere", ec2("instance_id: i-0123456789abcdef0, region: us-east-1, availability_zone: eu-west-1a"), "resources[1].auth.availability_zone"},
		{"ec2 with a key file", ec2("instance_id: i-0123456789abcdef0, region: us-east-1, key_file: /k"), "resources[1].auth.key_file"},
		{"ec2 endpoint type", ec2("instance_id: i-0123456789abcdef0, region: us-east-1, endpoint: { type: ssm, id: eice-0123456789abcdef0 }"), "resources[1].auth.endpoint.type"},
		{"ec2 endpoint id", ec2("instance_id: i-0123456789abcdef0, region: us-east-1, endpoint: { type: eice, id: vpce-1 }"), "resources[1].auth.endpoint.id"},
		{"ec2 endpoint dns name", ec2("instance_id: i-0123456789abcdef0, region: us-east-1, endpoint: { type: eice, id: eice-0123456789abcdef0, dns_name: \"https://x/\" }"), "resources[1].auth.endpoint.dns_name"},
		{"aws endpoint_url", base + "aws: { endpoint_url: \"localhost:4566\" }\n", "aws.endpoint_url"},
		{"aws rate", base + "aws: { rds_connect_rate: -1 }\n", "aws.rds_connect_rate"},
		{"negative start_timeout", base + "recorder: { start_timeout: -1s }\n", "recorder.start_timeout"},
		{"short instance_timeout", base + "recorder: { instance_timeout: 500ms }\n", "recorder.instance_timeout"},
		{"bad instances_bucket", base + "recorder: { instances_bucket: \"a.b\" }\n", "recorder.instances_bucket"},
		{"instances_bucket is the grants bucket", base + "recorder: { instances_bucket: airlock_grants }\n", "recorder.instances_bucket"},
		{"notify without public_url", base + "notify: [{ url: \"https://h/x\", format: slack, events: [request.created] }]\n", "console.public_url: required"},
		{"bad public_url", base + "console: { public_url: \"airlock.example.com\" }\n", "console.public_url"},
		{"notify unknown event", notify("format: slack, events: [request.created, statement.approved]"), "notify[0].events[1]: \"statement.approved\" is not one of"},
		{"notify unknown format", notify("format: teams, events: [request.created]"), "notify[0].format: \"teams\" is not standard or slack"},
		{"notify no events", notify("format: slack"), "notify[0].events: required"},
		{"notify standard without secret", notify("format: standard, events: [request.created]"), "notify[0].secret_env: required"},
		{"notify secret unset", notify("format: standard, secret_env: AIRLOCK_TEST_UNSET_SECRET, events: [request.created]"), "notify[0].secret_env: environment variable AIRLOCK_TEST_UNSET_SECRET is empty"},
		{"notify secret not whsec", notify("format: standard, secret_env: AIRLOCK_TEST_BAD_SECRET, events: [request.created]"), "notify[0].secret_env: the secret in AIRLOCK_TEST_BAD_SECRET does not start with whsec_"},
		{"notify secret short", notify("format: standard, secret_env: AIRLOCK_TEST_SHORT_SECRET, events: [request.created]"), "notify[0].secret_env: the secret in AIRLOCK_TEST_SHORT_SECRET holds 3 bytes"},
		{"notify slack with secret", notify("format: slack, secret_env: X, events: [request.created]"), "notify[0].secret_env: not used with format slack"},
		{"notify bad url", strings.Replace(notify("format: slack, events: [request.created]"), "https://hooks.example.com/T/B/SECRET", "ftp://x", 1), "notify[0].url"},
		{"notify short retry_for", notify("format: slack, events: [request.created], retry_for: 1h"), "notify[0].retry_for"},
		{"notify timeout", notify("format: slack, events: [request.created], timeout: 10m"), "notify[0].timeout"},
		{"notify same name", notify("format: slack, events: [request.created]") + "  - { url: \"https://hooks.example.com/T/B/SECRET\", format: slack, events: [request.created] }\n", "notify[1].name"},
	}
	t.Setenv("AIRLOCK_TEST_BAD_SECRET", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0")
	t.Setenv("AIRLOCK_TEST_SHORT_SECRET", "whsec_YWJj")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	if _, err := Parse([]byte(base)); err != nil {
		t.Fatalf("base config: %v", err)
	}
}

func notify(target string) string {
	return base + "console: { public_url: \"https://airlock.example.com\" }\nnotify:\n  - { url: \"https://hooks.example.com/T/B/SECRET\", " + target + " }\n"
}

// A good notify list loads with its defaults, and no error or default
// name quotes a target's URL path (a Slack URL is a secret).
func TestNotifyConfig(t *testing.T) {
	t.Setenv("AIRLOCK_TEST_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	c, err := Parse([]byte(notify("format: standard, secret_env: AIRLOCK_TEST_SECRET, events: [request.created, statement.denied]") +
		"  - { name: slack-1, url: \"https://hooks.slack.com/services/T/B/X\", format: slack, events: [grant.expired], retry_min: 100ms }\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Notify[0], c.Notify[1]
	if a.Timeout != 10*time.Second || a.RetryMin != 5*time.Second || a.RetryMax != time.Hour || a.RetryFor != 24*time.Hour || b.RetryMin != 100*time.Millisecond {
		t.Errorf("defaults: %+v", a)
	}
	if !strings.HasPrefix(a.Name, "hooks_example_com-") || strings.Contains(a.Name, "SECRET") || b.Name != "slack-1" {
		t.Errorf("names %q %q", a.Name, b.Name)
	}
	_, err = Parse([]byte(strings.Replace(notify("format: teams, events: [bogus]"), "console:", "xconsole_unused:", 0)))
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("error quotes the URL: %v", err)
	}
}

// TestStartTimeout: omitted is the default, 0s is kept (wait forever).
func TestStartTimeout(t *testing.T) {
	c, err := Parse([]byte(base))
	if err != nil || c.Recorder.StartTimeout == nil || *c.Recorder.StartTimeout != DefaultStartTimeout {
		t.Fatalf("omitted: %v %v", c.Recorder.StartTimeout, err)
	}
	for in, want := range map[string]time.Duration{"0s": 0, "30s": 30 * time.Second} {
		c, err := Parse([]byte(base + "recorder: { start_timeout: " + in + " }\n"))
		if err != nil || c.Recorder.StartTimeout == nil || *c.Recorder.StartTimeout != want {
			t.Fatalf("start_timeout: %s: %v %v", in, c.Recorder.StartTimeout, err)
		}
	}
}

// TestNotifyDocExamples parses the configuration shown in
// docs/notifications.md and the commented notify list of
// examples/airlock.yaml, so both keep showing what the gateway accepts.
func TestNotifyDocExamples(t *testing.T) {
	t.Setenv("AIRLOCK_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	b, err := os.ReadFile("../docs/notifications.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	block := doc[strings.Index(doc, "```yaml\n")+len("```yaml\n"):]
	block = block[:strings.Index(block, "```")]
	c, err := Parse([]byte(base + block))
	if err != nil {
		t.Fatalf("docs/notifications.md: %v", err)
	}
	if len(c.Notify) != 2 || c.Notify[1].Name != "slack-approvers" || len(c.Notify[0].Events) != len(NotifyEvents) {
		t.Errorf("notify: %+v", c.Notify)
	}
	b, err = os.ReadFile("../examples/airlock.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ex := string(b)
	i := strings.Index(ex, "#notify:\n")
	if i < 0 {
		t.Fatal("examples/airlock.yaml has no commented notify list")
	}
	var lines []string
	for _, l := range strings.SplitAfter(ex[i:], "\n") {
		if !strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "#" {
			break
		}
		lines = append(lines, strings.TrimPrefix(l, "#"))
	}
	c, err = Parse([]byte(base + "console: { public_url: \"https://airlock.example.com\" }\n" + strings.Join(lines, "")))
	if err != nil {
		t.Fatalf("examples/airlock.yaml notify list: %v", err)
	}
	if len(c.Notify) != 2 {
		t.Errorf("examples/airlock.yaml: %d notify targets", len(c.Notify))
	}
}
