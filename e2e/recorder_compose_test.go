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

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"go.yaml.in/yaml/v3"

	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/testenv"
)

// TestComposeConfig validates docker-compose.yml without a Docker engine:
// deploy/gensecrets makes its secrets, docker-compose config accepts it,
// every service sits on the networks it should (the agents' side reaches
// only the gateway), has a health check, and starts only once what it
// depends on is healthy; every image is built from the Dockerfile; the
// gateway's configuration passes airlock's own validation, every NATS
// node's configuration passes nats-server's, and .dockerignore keeps
// secrets out of the build context while letting in what the build needs.
// scripts/compose-test.sh (make compose-test) runs the stack on an engine.
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
			Networks    map[string]any `yaml:"networks"`
			Ports       []any          `yaml:"ports"`
			Build       map[string]any `yaml:"build"`
			Healthcheck *struct {
				Test    []string `yaml:"test"`
				Disable bool     `yaml:"disable"`
			} `yaml:"healthcheck"`
			DependsOn map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
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

	// Every service but the on-demand agent has a health check, and
	// starts only once what it depends on is healthy: the gateway after
	// the three NATS nodes and its upstreams, the agent after the gateway.
	for name, svc := range cf.Services {
		hc := svc.Healthcheck
		if name != "agent" && (hc == nil || hc.Disable || len(hc.Test) < 2 || (hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL")) {
			t.Errorf("service %s: no health check (healthcheck.test)", name)
		}
		for dep, d := range svc.DependsOn {
			if d.Condition != "service_healthy" {
				t.Errorf("service %s: depends_on %s: condition %q, want service_healthy", name, dep, d.Condition)
			}
			if _, ok := cf.Services[dep]; !ok {
				t.Errorf("service %s: depends_on %s: no such service", name, dep)
			}
		}
		// Every image is built here, on the Dockerfile's two base images.
		if target, _ := svc.Build["target"].(string); target == "" {
			t.Errorf("service %s: not built from the Dockerfile (build.target)", name)
		}
	}
	wantDeps := map[string][]string{
		"gateway": {"mariadb", "nats-1", "nats-2", "nats-3", "postgres", "sshd"},
		"agent":   {"gateway"},
	}
	for name, deps := range wantDeps {
		var got []string
		for d := range cf.Services[name].DependsOn {
			got = append(got, d)
		}
		slices.Sort(got)
		if !slices.Equal(got, deps) {
			t.Errorf("service %s depends on %v, want %v", name, got, deps)
		}
	}
	for i := 1; i <= 3; i++ {
		name := "nats-" + string(rune('0'+i))
		if hc := cf.Services[name].Healthcheck; hc != nil && !slices.Contains(hc.Test, "http://127.0.0.1:8222/healthz") {
			t.Errorf("service %s: health check %v, want JetStream's full /healthz on the monitoring port", name, hc.Test)
		}
	}

	// The configuration the gateway container reads is valid, and the
	// gateway's health check asks its HTTP listener.
	gwCfg, err := config.Load(filepath.Join(secrets, "airlock.yaml"))
	if err != nil {
		t.Errorf("deploy/secrets/airlock.yaml: %v", err)
	} else if hc := cf.Services["gateway"].Healthcheck; hc != nil {
		_, port, _ := strings.Cut(gwCfg.Listen.HTTP, ":")
		if want := "http://127.0.0.1:" + port + "/healthz"; !slices.Contains(hc.Test, want) {
			t.Errorf("gateway health check %v, want %s (listen.http %s)", hc.Test, want, gwCfg.Listen.HTTP)
		}
	}

	raw, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := yaml.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	if v, ok := top["version"]; ok {
		t.Errorf("docker-compose.yml has version: %v; the Compose Specification has none (and needs none for depends_on conditions)", v)
	}
	checkDockerfile(t, root)
	checkDockerignore(t, ctx, root)

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

// checkDockerfile holds the Dockerfile to two base images, named by its
// GO_IMAGE and DEBIAN_IMAGE arguments (which scripts/compose-test.sh
// replaces where they cannot be pulled); every other FROM is a stage.
func checkDockerfile(t *testing.T, root string) {
	t.Helper()
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string]bool{}
	args := map[string]bool{}
	for _, line := range strings.Split(string(df), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "ARG":
			name, _, _ := strings.Cut(f[1], "=")
			args[name] = true
		case len(f) >= 2 && f[0] == "FROM":
			base := f[1]
			if !stages[base] && base != "${GO_IMAGE}" && base != "${DEBIAN_IMAGE}" {
				t.Errorf("Dockerfile: FROM %s: use ${GO_IMAGE}, ${DEBIAN_IMAGE} or an earlier stage", base)
			}
			if len(f) == 4 && strings.EqualFold(f[2], "AS") {
				stages[f[3]] = true
			}
		}
	}
	for _, a := range []string{"GO_IMAGE", "DEBIAN_IMAGE"} {
		if !args[a] {
			t.Errorf("Dockerfile: no ARG %s", a)
		}
	}
}

// checkDockerignore reads .dockerignore with the matcher Docker's builders
// use: secrets, local state and version control stay out of the build
// context, and every file the Dockerfile copies and every source file of
// the binaries it builds gets in.
func checkDockerignore(t *testing.T, ctx context.Context, root string) {
	t.Helper()
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	excluded := func(p string) bool {
		m, err := pm.MatchesOrParentMatches(p)
		if err != nil {
			t.Fatalf(".dockerignore: %s: %v", p, err)
		}
		return m
	}
	for _, p := range []string{
		"deploy/secrets/gateway.nk", "deploy/secrets/.env", "deploy/secrets/tokens.env",
		"deploy/secrets/box_key", "deploy/secrets/sshd_host_key", "deploy/secrets/airlock.yaml",
		".git", ".git/config", "demo/env.sh", "demo/airlock.yaml", "airlock-data/signing.key",
		"bin/airlock", "airlock", "e2e/e2e.test", "cpu.prof", "bench/cpu.prof",
		"deploy/reviewer.nk", "tokens.env", ".env",
	} {
		if !excluded(p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}

	// What the Dockerfile copies from the context.
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var need []string
	for _, line := range strings.Split(string(df), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "COPY" || strings.HasPrefix(f[1], "--from=") {
			continue
		}
		for _, src := range f[1 : len(f)-1] {
			if !strings.HasPrefix(src, "--") && src != "." {
				need = append(need, filepath.Clean(src))
			}
		}
	}
	// Every file of the main module's packages that the images' binaries
	// are built from (COPY . .).
	list := exec.CommandContext(ctx, "go", "list", "-deps", "-f",
		`{{if and .Module .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .CgoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .CFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .HFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}`,
		"./cmd/airlock", "./deploy/healthcheck")
	list.Dir = root
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			t.Fatal(err)
		}
		need = append(need, rel)
	}
	if len(need) < 20 {
		t.Fatalf("found only %d files the build needs: %v", len(need), need)
	}
	for _, p := range need {
		if excluded(filepath.ToSlash(p)) {
			t.Errorf(".dockerignore keeps %s out of the build context; the Dockerfile needs it", p)
		}
	}
}
