package config

import (
	"strings"
	"testing"
	"time"
)

func TestConsoleConfig(t *testing.T) {
	c, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.Console.IdleTimeout != 30*time.Minute || c.Console.SessionLifetime != 12*time.Hour || c.Console.Bucket != "airlock_console" || c.Console.PublicURL != "" {
		t.Errorf("console defaults: %+v", c.Console)
	}
	if c, err := Parse([]byte(base + "console: { public_url: https://airlock.example.com, idle_timeout: 10m, session_lifetime: 1h }\n")); err != nil || c.Console.PublicURL != "https://airlock.example.com" {
		t.Errorf("a valid console section: %+v %v", c, err)
	}
	for _, bad := range []struct{ yaml, want string }{
		{"console: { public_url: airlock.example.com }", "console.public_url"},
		{"console: { public_url: ftp://airlock.example.com }", "console.public_url"},
		{"console: { public_url: \"https://airlock.example.com/?x=1\" }", "console.public_url"},
		{"console: { idle_timeout: 10s }", "console.idle_timeout"},
		{"console: { idle_timeout: 2h, session_lifetime: 1h }", "console.session_lifetime"},
		{"console: { bucket: \"a.b\" }", "console.bucket"},
		{"console: { bucket: airlock_grants }", "console.bucket"},
		{"console: { bogus: 1 }", "field bogus not found"},
	} {
		if _, err := Parse([]byte(base + bad.yaml + "\n")); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want an error naming %s", bad.yaml, err, bad.want)
		}
	}
}
