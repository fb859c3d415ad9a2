package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/testenv"
)

// TestComposeConfig validates docker-compose.yml without a Docker engine:
// deploy/gensecrets makes its secrets, docker-compose config accepts it,
// every service sits on the networks it should (the agents' side reaches
// only the gateway), the gateway's configuration passes airlock's own
// validation, and every NATS node's configuration passes nats-server's.
func TestComposeConfig(t *testing.T) {
	compose := testenv.RequireBinary(t, "docker-compose", "docker-compose")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	secrets := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	gen := exec.CommandContext(ctx, "go", "run", "./deploy/gensecrets", "-dir", secrets, "-config", filepath.Join("deploy", "airlock", "airlock.yaml"))
	gen.Dir = root
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("gensecrets: %v\n%s", err, out)
	}

	// Without its secrets the file names the command that makes them.
	cmd := exec.CommandContext(ctx, compose, "-f", filepath.Join(root, "docker-compose.yml"), "config")
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "deploy/gensecrets") {
		t.Fatalf("docker-compose config without secrets: %v\n%s", err, out)
	}

	cmd = exec.CommandContext(ctx, compose, "-f", filepath.Join(root, "docker-compose.yml"), "--env-file", filepath.Join(secrets, ".env"), "config")
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, stderr.String())
	}
	var cf struct {
		Services map[string]struct {
			Networks map[string]any `yaml:"networks"`
			Ports    []any          `yaml:"ports"`
			Build    map[string]any `yaml:"build"`
		} `yaml:"services"`
		Networks map[string]struct {
			Internal bool `yaml:"internal"`
		} `yaml:"networks"`
	}
	if err := yaml.Unmarshal(out, &cf); err != nil {
		t.Fatalf("docker-compose config output: %v\n%s", err, out)
	}
	want := map[string][]string{
		"gateway":  {"agents", "recorder", "upstreams"},
		"nats-1":   {"recorder"},
		"nats-2":   {"recorder"},
		"nats-3":   {"recorder"},
		"postgres": {"upstreams"},
		"mariadb":  {"upstreams"},
		"sshd":     {"upstreams"},
		"agent":    {"agents"},
	}
	for name, nets := range want {
		svc, ok := cf.Services[name]
		if !ok {
			t.Errorf("service %s missing", name)
			continue
		}
		var got []string
		for n := range svc.Networks {
			got = append(got, n)
		}
		slices.Sort(got)
		if !slices.Equal(got, nets) {
			t.Errorf("service %s on networks %v, want %v", name, got, nets)
		}
		if name != "gateway" && len(svc.Ports) > 0 {
			t.Errorf("service %s publishes ports %v; only the gateway may", name, svc.Ports)
		}
	}
	if len(cf.Services) != len(want) {
		t.Errorf("services %d, want %d: a new service needs its networks checked here", len(cf.Services), len(want))
	}
	for _, n := range []string{"recorder", "upstreams"} {
		if !cf.Networks[n].Internal {
			t.Errorf("network %s is not internal", n)
		}
	}

	// The configuration the gateway container reads is valid.
	if _, err := config.Load(filepath.Join(secrets, "airlock.yaml")); err != nil {
		t.Errorf("deploy/secrets/airlock.yaml: %v", err)
	}

	// Every NATS node's configuration, with the users' keys from .env.
	env, err := os.ReadFile(filepath.Join(secrets, ".env"))
	if err != nil {
		t.Fatal(err)
	}
	natsBin := testenv.NATSServerBinary(t)
	for i := 1; i <= 3; i++ {
		conf := filepath.Join(root, "deploy", "nats", "nats-"+string(rune('0'+i))+".conf")
		cmd := exec.CommandContext(ctx, natsBin, "-t", "-c", conf)
		cmd.Env = append(cleanEnv(), strings.Fields(string(env))...)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "is valid") {
			t.Errorf("nats-server -t -c %s: %v\n%s", conf, err, out)
		}
	}
}

// cleanEnv is the environment without variables the compose file reads,
// so only --env-file provides them.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AIRLOCK_NATS_") || strings.HasPrefix(kv, "DEMO_PG_PASSWORD=") || strings.HasPrefix(kv, "SHOP_MYSQL_PASSWORD=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
