package config

import (
	"os"
	"strings"
	"testing"
)

// rds is base with a second, rds-iam resource whose auth (and tls) are
// given.
func rds(authTLS string) string {
	return base + "  - { name: orders-db, protocol: postgres, address: \"orders.cluster-abc.us-east-1.rds.amazonaws.com:5432\", database: orders, user: airlock_ro, " + authTLS + " }\n"
}

// ec2 is base with a second, ec2-instance-connect resource with the
// given auth fields.
func ec2(auth string) string {
	return base + "  - { name: web-1, protocol: ssh, address: \"10.0.1.12:22\", user: ec2-user, host_key: \"ssh-ed25519 AAAA\", auth: { type: ec2-instance-connect, " + auth + " } }\n"
}

func TestAWSDefaults(t *testing.T) {
	c, err := Parse([]byte(rds("auth: { type: rds-iam, region: us-east-1, assume_role_arn: \"arn:aws:iam::123456789012:role/airlock-rds\" }")))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Resource("orders-db"); r.TLS.Mode != "verify-full" {
		t.Errorf("rds-iam tls.mode defaults to %q, want verify-full", r.TLS.Mode)
	}
	if c.Resource("demo-pg").TLS.Mode != "prefer" {
		t.Errorf("password resources keep prefer")
	}
	if c.AWS.RDSConnectRate != 100 {
		t.Errorf("aws.rds_connect_rate defaults to %g", c.AWS.RDSConnectRate)
	}
	c, err = Parse([]byte(ec2("instance_id: i-0123456789abcdef0, region: us-east-1, availability_zone: us-east-1a, endpoint: { type: eice, id: eice-0123456789abcdef0 }")))
	if err != nil {
		t.Fatal(err)
	}
	if e := c.Resource("web-1").Auth.Endpoint; e == nil || e.ID != "eice-0123456789abcdef0" {
		t.Errorf("endpoint %+v", e)
	}
}

// TestAWSDocExample parses the worked example of docs/aws.md, so the page
// keeps showing a configuration the gateway accepts.
func TestAWSDocExample(t *testing.T) {
	b, err := os.ReadFile("../docs/aws.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "## Worked example")
	if i < 0 {
		t.Fatal("docs/aws.md has no worked example")
	}
	block := doc[i:]
	block = block[strings.Index(block, "```yaml\n")+len("```yaml\n"):]
	block = block[:strings.Index(block, "```")]
	c, err := Parse([]byte(block))
	if err != nil {
		t.Fatalf("the worked example of docs/aws.md: %v", err)
	}
	if r := c.Resource("worker-7"); r == nil || r.Auth.Endpoint == nil || r.Auth.Endpoint.Type != "eice" {
		t.Errorf("worker-7: %+v", r)
	}
	if r := c.Resource("billing-mysql"); r == nil || r.TLS.Mode != "verify-full" || r.Auth.AssumeRoleARN == "" {
		t.Errorf("billing-mysql: %+v", r)
	}
}
