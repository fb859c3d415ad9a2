package natsconn

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func connect(t *testing.T, o Options) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Connect(ctx, o)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// streamMsgs creates stream S (if missing) on subject s.> and returns how
// many messages it holds.
func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx := context.Background()
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

func TestEmbeddedPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	c := connect(t, Options{DataDir: dir, Name: "test"})
	if !c.Embedded() || c.ClientURL() != "" {
		t.Fatalf("embedded %v, client url %q; want in-process only", c.Embedded(), c.ClientURL())
	}
	if n := streamMsgs(t, c.JS); n != 0 {
		t.Fatalf("new stream holds %d", n)
	}
	ctx := context.Background()
	for i := range 3 {
		if _, err := c.JS.Publish(ctx, "s.x", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Fatalf("store not in DataDir/jetstream: %v", err)
	}

	srv := c.embedded
	c.Close()
	if srv.Running() {
		t.Fatal("embedded server still running after Close")
	}
	if !c.NC.IsClosed() {
		t.Fatal("connection not closed")
	}
	c.Close() // a second Close is harmless

	c2 := connect(t, Options{DataDir: dir})
	if n := streamMsgs(t, c2.JS); n != 3 {
		t.Fatalf("after restart the stream holds %d messages, want 3", n)
	}
}

func TestEmbeddedListen(t *testing.T) {
	c := connect(t, Options{DataDir: t.TempDir(), EmbeddedListen: "127.0.0.1:0"})
	url := c.ClientURL()
	if url == "" || url == "nats://127.0.0.1:0" {
		t.Fatalf("client url %q", url)
	}
	streamMsgs(t, c.JS)
	// An external tool (the nats CLI) connects over TCP and sees the data.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("external connect to %s: %v", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), "s.ext", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, c.JS); n != 1 {
		t.Fatalf("stream holds %d, want 1", n)
	}
}

func TestURLMode(t *testing.T) {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	c := connect(t, Options{URL: s.ClientURL(), Name: "gw"})
	if c.Embedded() {
		t.Fatal("URL mode reports embedded")
	}
	if c.NC.Opts.MaxReconnect != -1 || c.NC.Opts.ReconnectWait != reconnectWait {
		t.Fatalf("reconnect %d every %s; want forever every %s", c.NC.Opts.MaxReconnect, c.NC.Opts.ReconnectWait, reconnectWait)
	}
	streamMsgs(t, c.JS)
	c.Close()
	if !s.Running() {
		t.Fatal("Close shut down a server it does not own")
	}
}

func TestConnectErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Connect(ctx, Options{}); err == nil {
		t.Error("embedded without a data dir accepted")
	}
	if _, err := Connect(ctx, Options{DataDir: t.TempDir(), EmbeddedListen: "nonsense"}); err == nil {
		t.Error("bad embedded listen accepted")
	}
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := Connect(ctx, Options{URL: "nats://" + addr}); err == nil {
		t.Error("connect to a closed port succeeded")
	}
}

// TestCredentialsFile: recorder.credentials_file takes a .creds file or a
// bare nkey seed, and names the file when it is neither.
func TestCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	seed := write("user.nk", "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n")
	if _, err := credentials(seed); err != nil {
		t.Errorf("nkey seed: %v", err)
	}
	creds := write("user.creds", "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1Qi\n------END NATS USER JWT------\n")
	if _, err := credentials(creds); err != nil {
		t.Errorf(".creds file: %v", err)
	}
	junk := write("junk", "password123\n")
	if _, err := credentials(junk); err == nil || !strings.Contains(err.Error(), junk) {
		t.Errorf("junk credentials: %v", err)
	}
	if _, err := credentials(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing credentials file accepted")
	}
}
