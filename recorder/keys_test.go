package recorder

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestLoadSigningKey(t *testing.T) {
	dir := t.TempDir()
	s, created, err := LoadSigningKey("", dir)
	if err != nil || !created {
		t.Fatalf("generate: %v created=%v", err, created)
	}
	fi, err := os.Stat(filepath.Join(dir, SigningKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	again, created, err := LoadSigningKey("", dir)
	if err != nil || created || again.Fingerprint() != s.Fingerprint() {
		t.Fatalf("reload: %v created=%v fp %s want %s", err, created, again.Fingerprint(), s.Fingerprint())
	}
	// A configured path that does not exist is an error, not a new key.
	if _, _, err := LoadSigningKey(filepath.Join(dir, "missing.key"), dir); err == nil {
		t.Fatal("missing configured key accepted")
	}
	// A key others can read is refused.
	loose := filepath.Join(dir, "loose.key")
	b, _ := os.ReadFile(filepath.Join(dir, SigningKeyFile))
	if err := os.WriteFile(loose, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadSigningKey(loose, ""); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key: %v", err)
	}
	if err := os.WriteFile(loose, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadSigningKey(loose, ""); err == nil || !strings.Contains(err.Error(), "PKCS#8") {
		t.Fatalf("junk key: %v", err)
	}

	// The public half parses back in every form airlock prints, and the
	// fingerprint is the one ssh-keygen computes.
	pubLine, err := os.ReadFile(filepath.Join(dir, SigningPublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{string(pubLine), s.Public().Key, s.Public().SSH} {
		k, err := ParsePublicKey([]byte(form))
		if err != nil || k.Fingerprint != s.Fingerprint() {
			t.Errorf("parse %q: %v %s", form, err, k.Fingerprint)
		}
	}
	if _, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command("ssh-keygen", "-lf", filepath.Join(dir, SigningPublicKeyFile)).Output()
		if err != nil || !strings.Contains(string(out), s.Fingerprint()) {
			t.Errorf("ssh-keygen -lf: %s %v, want %s", out, err, s.Fingerprint())
		}
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		// A key made with openssl, as the docs suggest, loads.
		p := filepath.Join(dir, "openssl.key")
		if out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", p).CombinedOutput(); err != nil {
			t.Fatalf("openssl: %v %s", err, out)
		}
		os.Chmod(p, 0o600)
		if _, _, err := LoadSigningKey(p, ""); err != nil {
			t.Errorf("openssl key: %v", err)
		}
		pem, err := exec.Command("openssl", "pkey", "-in", p, "-pubout").Output()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParsePublicKey(pem); err != nil {
			t.Errorf("PEM public key: %v", err)
		}
	}
	// A fingerprint that does not match its key is refused.
	k := s.Public()
	k.Fingerprint = "SHA256:AAAA"
	if _, err := NewKeyring(k); err == nil {
		t.Error("mismatched fingerprint accepted")
	}
}

func TestStreamWeaknesses(t *testing.T) {
	want := StreamConfig(Options{Stream: "S", Replicas: 3, MaxAge: 48 * time.Hour})
	for _, tc := range []struct {
		name   string
		change func(c *jetstream.StreamConfig)
		want   string // "" means acceptable
	}{
		{"as created", func(c *jetstream.StreamConfig) {}, ""},
		{"stronger: more replicas, longer age, no discard", func(c *jetstream.StreamConfig) {
			c.Replicas, c.MaxAge, c.Discard = 5, 0, jetstream.DiscardOld
		}, ""},
		{"memory", func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }, "storage is Memory"},
		{"fewer replicas", func(c *jetstream.StreamConfig) { c.Replicas = 1 }, "1 replicas, recorder.replicas asks for 3"},
		{"delete", func(c *jetstream.StreamConfig) { c.DenyDelete = false }, "deny_delete is off"},
		{"purge", func(c *jetstream.StreamConfig) { c.DenyPurge = false }, "deny_purge is off"},
		{"rollup", func(c *jetstream.StreamConfig) { c.AllowRollup = true }, "allow_rollup_hdrs"},
		{"ttl", func(c *jetstream.StreamConfig) { c.AllowMsgTTL = true }, "allow_msg_ttl"},
		{"no ack", func(c *jetstream.StreamConfig) { c.NoAck = true }, "no_ack"},
		{"work queue", func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy }, "retention"},
		{"per subject", func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 1 }, "max_msgs_per_subject"},
		{"shorter age", func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour }, "max_age is 1h0m0s but recorder.max_age is 48h0m0s"},
		{"size cap not configured", func(c *jetstream.StreamConfig) { c.MaxBytes = 1 << 30 }, "max_bytes is 1073741824 but recorder.max_bytes is not set"},
		{"count cap discarding old", func(c *jetstream.StreamConfig) { c.MaxMsgs, c.Discard = 1000, jetstream.DiscardOld }, "discard is old"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			have := want
			tc.change(&have)
			got := strings.Join(weaknesses(have, want), "; ")
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("weaknesses: %q, want %q", got, tc.want)
			}
		})
	}

	// Against a real server: a stream an operator made deletable stops
	// the recorder with an error naming the stream and the setting.
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	cfg := StreamConfig(Options{Stream: "WEAK", Subjects: "weak.events"})
	cfg.DenyDelete = false
	if _, err := h.js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	_, err := New(ctx, h.js, Options{Stream: "WEAK", Subjects: "weak.events", Signer: h.rec.Signer()})
	if err == nil || !strings.Contains(err.Error(), "stream WEAK is weaker") || !strings.Contains(err.Error(), "deny_delete is off") {
		t.Fatalf("New on a deletable stream: %v", err)
	}
	// Limits the operator configured are applied on creation and accepted.
	o := Options{Stream: "LIMITED", Subjects: "limited.events", Signer: h.rec.Signer(), MaxAge: 24 * time.Hour, MaxBytes: 1 << 30}
	if _, err := New(ctx, h.js, o); err != nil {
		t.Fatal(err)
	}
	st, err := h.js.Stream(ctx, "LIMITED")
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxAge != 24*time.Hour || c.MaxBytes != 1<<30 || c.Discard != jetstream.DiscardNew || c.MaxMsgs != -1 {
		t.Fatalf("limited stream: %+v", c)
	}
	if _, err := New(ctx, h.js, Options{Stream: "LIMITED", Subjects: "limited.events", Signer: h.rec.Signer()}); err == nil {
		t.Fatal("a limited stream accepted by a gateway configured without limits")
	}
	if _, err := New(ctx, h.js, Options{Stream: "X", Signer: nil}); err == nil {
		t.Fatal("recorder without a signing key")
	}
}
