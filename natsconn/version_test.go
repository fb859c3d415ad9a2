package natsconn

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"2.11.0", "2.11.0", 0},
		{"2.9.10", "2.11.0", -1},
		{"2.10.29", "2.11.0", -1},
		{"2.11.1", "2.11.0", 1},
		{"2.12.0", "2.11.9", 1},
		{"3.0.0", "2.11.0", 1},
		{"v2.11.0", "2.11.0", 0},
		{"2.11.0-RC.2", "2.11.0", 0},
		{"2.12.0-beta.1+build.7", "2.11.0", 1},
		{"2.2.0", "2.10.0", -1}, // numbers, not strings
		{"10.0.0", "9.99.99", 1},
	}
	for _, c := range cases {
		got, err := compareVersions(c.a, c.b)
		if err != nil || got != c.want {
			t.Errorf("compareVersions(%q, %q) = %d, %v; want %d", c.a, c.b, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "2.11", "2.x.0", "two", "2.11.0.1", "-1.0.0"} {
		if _, err := compareVersions(bad, "2.11.0"); err == nil {
			t.Errorf("compareVersions(%q): no error", bad)
		}
	}
}

func TestCheckVersion(t *testing.T) {
	if err := checkVersion(MinServerVersion); err != nil {
		t.Fatalf("the minimum itself: %v", err)
	}
	if err := checkVersion(server.VERSION); err != nil {
		t.Fatalf("the embedded server %s: %v", server.VERSION, err)
	}
	err := checkVersion("2.9.10")
	if !errors.Is(err, ErrServerUnsupported) {
		t.Fatalf("2.9.10: %v", err)
	}
	// The error names what was found, what is needed, and why.
	for _, want := range []string{"2.9.10", MinServerVersion, "2.10.0: consumers with several filter subjects", "2.11.0: the Nats-Expected-Last-Subject-Sequence-Subject header"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// 2.10 has several filter subjects: only the 2.11 feature is missing.
	err = checkVersion("2.10.22")
	if err == nil || strings.Contains(err.Error(), "2.10.0:") || !strings.Contains(err.Error(), "2.11.0:") {
		t.Fatalf("2.10.22: %v", err)
	}
	if err := checkVersion("nonsense"); !errors.Is(err, ErrServerUnsupported) || !strings.Contains(err.Error(), MinServerVersion) {
		t.Fatalf("unreadable version: %v", err)
	}
	// MinServerVersion is the newest feature's version.
	newest := "0.0.0"
	for _, f := range serverFeatures {
		if c, _ := compareVersions(f.since, newest); c > 0 {
			newest = f.since
		}
	}
	if newest != MinServerVersion {
		t.Fatalf("MinServerVersion %s, newest feature needs %s", MinServerVersion, newest)
	}
}

// TestCheckServerEmbedded: the embedded server passes, and a server
// without JetStream is refused for good, naming the fix.
func TestCheckServerEmbedded(t *testing.T) {
	c := connect(t, Options{DataDir: t.TempDir(), Name: "test"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.CheckServer(ctx); err != nil {
		t.Fatalf("embedded: %v", err)
	}

	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	plain := connect(t, Options{URL: s.ClientURL(), Name: "test"})
	err = plain.CheckServer(ctx)
	if !errors.Is(err, ErrServerUnsupported) || !strings.Contains(err.Error(), "JetStream is not enabled") || !strings.Contains(err.Error(), s.ClientURL()) {
		t.Fatalf("server without JetStream: %v", err)
	}
}
