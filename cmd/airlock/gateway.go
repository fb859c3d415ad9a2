package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockhq/airlock/awsauth"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/control/console"
	airlockmcp "github.com/airlockhq/airlock/control/mcp"
	"github.com/airlockhq/airlock/control/notify"
	"github.com/airlockhq/airlock/metrics"
	"github.com/airlockhq/airlock/natsconn"
	"github.com/airlockhq/airlock/protocols/mysql"
	"github.com/airlockhq/airlock/protocols/postgres"
	sshproto "github.com/airlockhq/airlock/protocols/ssh"
	"github.com/airlockhq/airlock/proxy"
	"github.com/airlockhq/airlock/recorder"
)

func gatewayCmd() *cobra.Command {
	var path, logLevel string
	cmd := &cobra.Command{
		Use:   "gateway --config FILE",
		Short: "Run the gateway (operator)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			return runGateway(cmd.Context(), cfg, log)
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "gateway configuration file (YAML)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// runGateway wires the gateway's parts together and serves until ctx ends.
//
// It starts in two halves. What needs nothing outside the process (keys,
// certificates, the HTTP listener) is set up at once, and an error there
// stops the gateway. What needs NATS (the connection, JetStream, the
// stream, the buckets) is waited for with backoff, up to
// recorder.start_timeout, while /healthz says what is missing: a cluster
// that is still electing a leader is a reason to wait, not to exit. The
// SQL and SSH listeners open only once all of it is there, so nothing is
// accepted that could not be recorded (docs/recorder.md, "Starting").
func runGateway(ctx context.Context, cfg *config.Config, log *slog.Logger) (err error) {
	tuneGC(gcHeadroom)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	host, _ := os.Hostname()

	signer, created, err := recorder.LoadSigningKey(cfg.Recorder.SigningKeyFile, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("recorder.signing_key_file: %w", err)
	}
	// Reviewers compare this fingerprint with the key of what they verify.
	log.Info("event signing key", "fingerprint", signer.Fingerprint(), "public_key", signer.Public().Key, "generated", created)
	tlsCfg, err := proxy.LoadTLS(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.DataDir)
	if err != nil {
		return err
	}
	aws, err := newAWS(ctx, cfg, host, log)
	if err != nil {
		return err
	}
	mx := metrics.New()
	instance := recorder.NewInstanceID()
	previous, unlock, err := lockInstance(cfg.DataDir, instance)
	if err != nil {
		return err
	}
	defer unlock()
	log.Info("gateway instance", "instance", instance, "previous", previous)

	// The HTTP listener answers from the start: 503 and what the gateway
	// waits for, until it is ready.
	status := &control.Startup{}
	httpLn, err := net.Listen("tcp", cfg.Listen.HTTP)
	if err != nil {
		return fmt.Errorf("listen.http: %w", err)
	}
	hs := &http.Server{Handler: status, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 4)
	go func() {
		log.Info("HTTP API listening", "addr", httpLn.Addr().String())
		if err := hs.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	ready := false
	defer func() {
		if !ready {
			_ = hs.Close()
		}
	}()
	if cfg.Listen.Metrics != "" {
		ml, err := net.Listen("tcp", cfg.Listen.Metrics)
		if err != nil {
			return fmt.Errorf("listen.metrics: %w", err)
		}
		ms := &http.Server{Handler: mx.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = ms.Serve(ml) }()
		defer ms.Close()
		log.Info("metrics listening", "addr", ml.Addr().String())
	}

	// The heartbeat reports the oldest live session; srv is made once
	// NATS is there, before the heartbeat starts.
	var srv *proxy.Server
	oldest := func() time.Time {
		if srv == nil {
			return time.Time{}
		}
		return srv.OldestSession()
	}
	ns, err := waitForNATS(ctx, cfg, host, instance, previous, oldest, signer, status, mx, log)
	if err != nil {
		return err
	}
	nc, rec, store, instances, reader, notifier := ns.nc, ns.rec, ns.store, ns.instances, ns.reader, ns.notifier
	defer nc.Close()
	defer rec.Close()
	defer store.Close()
	defer func() {
		if !ready { // a listener failed: no session was served
			instances.Close(context.WithoutCancel(ctx), true)
		}
	}()

	srv = &proxy.Server{Config: cfg, Grants: store, Recorder: rec, Log: log, Gateway: host, Observer: mx}
	if ns.holds != nil {
		// Without its bucket a held statement is refused, never run
		// unapproved (proxy.Server.Holds).
		srv.Holds = ns.holds
	}
	// The session index reads the stream's history in the background;
	// session lists wait for it (briefly) until then.
	index := recorder.NewIndex(nc.JS, recorder.IndexOptions{Stream: rec.Stream(), SubjectPrefix: rec.SubjectPrefix(), Standby: rec.Standby(), Logger: log.With("component", "session-index")})
	ictx, icancel := context.WithCancel(ctx)
	defer icancel()
	go func() { _ = index.Run(ictx) }()
	svc := &control.Service{Store: store, Config: cfg, Holds: ns.holds}
	api := &control.API{
		Service:  svc,
		Sessions: reader,
		Index:    index,
		Keys:     []recorder.PublicKey{signer.Public()},
		Stream:   rec.Stream(),
		Log:      log,
	}
	// Long polls (GET /v1/grants/{id}?wait=) answer at shutdown instead
	// of holding it up.
	hs.RegisterOnShutdown(api.Close)
	if notifier != nil {
		api.Service.Notify, api.Notify, srv.Denials = notifier, notifier, notifier
		if ns.holds != nil {
			ns.holds.OnHeld(notifier.StatementHeld)
		}
	}
	uiHandler := consoleOff(cfg.Console.Bucket)
	if ns.console != nil {
		ui, err := console.New(console.Options{Config: cfg, Service: svc, Sessions: reader, Store: ns.console, Log: log.With("component", "console"),
			Index: index, Keys: []recorder.PublicKey{signer.Public()}, Stream: rec.Stream()})
		if err != nil {
			return err
		}
		api.Console, uiHandler = ui, ui.Handler()
		// Event streams end first, so the HTTP shutdown below does not
		// wait for them.
		hs.RegisterOnShutdown(ui.Close)
		defer ui.Close()
	}
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	if cfg.Listen.Postgres != "" {
		l, err := net.Listen("tcp", cfg.Listen.Postgres)
		if err != nil {
			return fmt.Errorf("listen.postgres: %w", err)
		}
		listeners = append(listeners, l)
		pg := &postgres.Protocol{TLS: tlsCfg, AllowPlaintext: cfg.Listen.AllowPlaintext}
		if aws != nil {
			pg.AWS = aws
		}
		go func() {
			if err := srv.Serve(l, pg); err != nil {
				errc <- fmt.Errorf("postgres listener: %w", err)
			}
		}()
	}
	if cfg.Listen.MySQL != "" {
		l, err := net.Listen("tcp", cfg.Listen.MySQL)
		if err != nil {
			return fmt.Errorf("listen.mysql: %w", err)
		}
		listeners = append(listeners, l)
		my := &mysql.Protocol{TLS: tlsCfg, AllowPlaintext: cfg.Listen.AllowPlaintext, Resources: cfg.Resources, Log: log.With("proto", "mysql")}
		if aws != nil {
			my.AWS = aws
		}
		// The greeting announces the upstream's version; learn it before
		// the first client arrives.
		go my.Probe()
		go func() {
			if err := srv.Serve(l, my); err != nil {
				errc <- fmt.Errorf("mysql listener: %w", err)
			}
		}()
	}
	if cfg.Listen.SSH != "" {
		sp, err := sshproto.New(cfg, log)
		if err != nil {
			return err
		}
		if aws != nil {
			sp.UseAWS(aws)
		}
		l, err := net.Listen("tcp", cfg.Listen.SSH)
		if err != nil {
			return fmt.Errorf("listen.ssh: %w", err)
		}
		listeners = append(listeners, l)
		go func() {
			if err := srv.Serve(l, sp); err != nil {
				errc <- fmt.Errorf("ssh listener: %w", err)
			}
		}()
	}
	apiRoutes := api.Handler()
	// MCP over streamable HTTP calls the API in process as the agent, and
	// reaches resources through the listeners above like any client.
	mcpHandler := airlockmcp.Handler(airlockmcp.HTTPOptions{Config: cfg, API: apiRoutes, Log: log.With("component", "mcp")})
	status.Ready(httpRoutes(apiRoutes, uiHandler, mcpHandler))
	ready = true
	instances.Start()
	notifier.Start()
	defer notifier.Close()
	log.Info("gateway ready", "recorder", recorderDesc(cfg, nc), "stream", rec.Stream(), "data_dir", cfg.DataDir)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-errc:
		log.Error("gateway failing", "err", err)
	}
	for _, l := range listeners {
		l.Close()
	}
	listeners = nil
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	_ = hs.Shutdown(sctx)
	// Once every session has ended, this process leaves the instances
	// bucket; if some did not, it stays, and other gateways mark what is
	// left open interrupted once it has been silent long enough.
	drained := srv.Shutdown(sctx) == nil
	instances.Close(sctx, drained)
	return err
}

// httpRoutes puts the web console (/ui/, and / redirecting there) and
// MCP (/mcp) beside the API on the HTTP listener.
func httpRoutes(api, ui, mcp http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle("/mcp", mcp)
	mux.Handle("/ui/", ui)
	mux.Handle("GET /{$}", ui)
	return mux
}

// consoleOff answers /ui/ when the console's bucket may not be used.
func consoleOff(bucket string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", console.CSP)
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "The web console is off: the gateway's NATS user may not use the key-value bucket "+bucket+
			" (see deploy/nats/accounts.conf). The API and the CLI work.", http.StatusServiceUnavailable)
	})
}

// natsParts is what the gateway keeps in NATS.
type natsParts struct {
	nc        *natsconn.Conn
	rec       *recorder.Recorder
	reader    *recorder.Reader
	store     *control.Store
	instances *recorder.Instances
	notifier  *notify.Notifier // nil without notify targets
	console   *console.Store
	holds     *control.HoldStore // nil: the NATS user may not use its bucket
}

// waitForNATS connects to NATS and opens what the gateway keeps there,
// each step waited for with backoff up to recorder.start_timeout.
func waitForNATS(ctx context.Context, cfg *config.Config, host, instance, previous string, oldest func() time.Time,
	signer *recorder.Signer, status *control.Startup, mx *metrics.Metrics, log *slog.Logger) (_ natsParts, err error) {
	var (
		nc    *natsconn.Conn
		rec   *recorder.Recorder
		store *control.Store
	)
	timeout := *cfg.Recorder.StartTimeout
	startCtx, cancel := context.WithCancel(ctx)
	if timeout > 0 {
		startCtx, cancel = context.WithTimeoutCause(ctx, timeout, errStartTimeout)
	}
	defer cancel()
	st := &starter{status: status, log: log, timeout: timeout}
	defer func() {
		if err != nil && store != nil {
			store.Close()
		}
		if err != nil && nc != nil {
			nc.Close()
		}
	}()

	where := "the embedded NATS server"
	if cfg.Recorder.NATSURL != "" {
		where = "NATS at " + cfg.Recorder.NATSURL
	}
	nc, err = waitFor(startCtx, st, "a connection to "+where, func(ctx context.Context) (*natsconn.Conn, error) {
		c, err := natsconn.Connect(ctx, natsconn.Options{
			URL: cfg.Recorder.NATSURL, CredentialsFile: cfg.Recorder.CredentialsFile,
			DataDir: cfg.DataDir, EmbeddedListen: cfg.Recorder.EmbeddedListen,
			SyncAlways: cfg.Recorder.EmbeddedSyncAlways,
			Name:       "airlock-gateway " + host, Logger: log,
		})
		if err != nil && cfg.Recorder.NATSURL == "" {
			// The embedded server is ours: it fails for a reason (its
			// store, a port) that another try does not change.
			return nil, stop(err)
		}
		return c, err
	})
	if err != nil {
		return natsParts{}, err
	}
	if _, err = waitFor(startCtx, st, "JetStream on "+where, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, nc.CheckServer(ctx)
	}); err != nil {
		return natsParts{}, err
	}
	// On a cluster, events and grants each have a standby that takes over
	// at once when a server dies, instead of waiting out an election
	// (docs/recorder.md, "Losing a node").
	failover := cfg.Recorder.Replicas > 1
	rec, err = waitFor(startCtx, st, "JetStream stream "+cfg.Recorder.Stream, func(ctx context.Context) (*recorder.Recorder, error) {
		return recorder.New(ctx, nc.JS, recorder.Options{
			Stream: cfg.Recorder.Stream, Replicas: cfg.Recorder.Replicas,
			PublishTimeout: cfg.Recorder.PublishTimeout, SignInterval: cfg.Recorder.SignInterval,
			Gateway: host, Instance: instance, Logger: log,
			Signer: signer, MaxAge: cfg.Recorder.MaxAge, MaxBytes: cfg.Recorder.MaxBytes, MaxMsgs: cfg.Recorder.MaxMsgs,
			Failover: failover, GroupCommit: cfg.Recorder.GroupCommitOn(),
		})
	})
	if err != nil {
		return natsParts{}, err
	}
	store, err = waitFor(startCtx, st, "key-value bucket "+cfg.Grants.Bucket+" (grants)", func(ctx context.Context) (*control.Store, error) {
		return control.OpenStore(ctx, nc.NC, nc.JS, control.StoreOptions{
			Bucket: cfg.Grants.Bucket, Replicas: cfg.Recorder.Replicas, Standby: failover, Logger: log,
		})
	})
	if err != nil {
		return natsParts{}, err
	}
	reader := recorder.NewReader(nc.JS, rec.Stream(), rec.SubjectPrefix())
	instances, err := waitFor(startCtx, st, "key-value bucket "+cfg.Recorder.InstancesBucket+" (gateway heartbeats)", func(ctx context.Context) (*recorder.Instances, error) {
		return recorder.OpenInstances(ctx, nc.JS, recorder.InstanceOptions{
			Bucket: cfg.Recorder.InstancesBucket, Replicas: cfg.Recorder.Replicas, Timeout: cfg.Recorder.InstanceTimeout,
			Instance: instance, Gateway: host, Previous: previous,
			Recorder: rec, Reader: reader, OldestOpen: oldest, Logger: log,
		})
	})
	if err != nil {
		return natsParts{}, err
	}
	cs, err := waitFor(startCtx, st, "key-value bucket "+cfg.Console.Bucket+" (web console sessions)", func(ctx context.Context) (*console.Store, error) {
		s, err := console.OpenStore(ctx, nc.JS, cfg.Console.Bucket, cfg.Recorder.Replicas, cfg.Console.SessionLifetime)
		if err != nil && natsconn.Denied(nc.NC, "KV_"+cfg.Console.Bucket) {
			// The console is not worth refusing sessions for: an operator
			// who upgraded the gateway but not the NATS permissions keeps
			// a working gateway, told why in the log and on /ui/.
			log.Warn("web console off: the gateway's NATS user may not use its bucket (see deploy/nats/accounts.conf)",
				"bucket", cfg.Console.Bucket, "err", nc.NC.LastError())
			return nil, nil
		}
		return s, err
	})
	if err != nil {
		instances.Close(context.WithoutCancel(ctx), true)
		return natsParts{}, err
	}
	holds, err := waitFor(startCtx, st, "key-value bucket "+cfg.Grants.HoldsBucket+" (held statements)", func(ctx context.Context) (*control.HoldStore, error) {
		h, err := control.OpenHoldStore(ctx, nc.JS, control.HoldStoreOptions{Bucket: cfg.Grants.HoldsBucket, Replicas: cfg.Recorder.Replicas, Logger: log})
		if err != nil && natsconn.Denied(nc.NC, "KV_"+cfg.Grants.HoldsBucket) {
			// Like the console: an operator who upgraded the gateway but
			// not the NATS permissions keeps a working gateway. A
			// statement a grant holds is then refused (nothing can wait
			// for a person), and /v1/holds answers 503.
			log.Warn("held statements off: the gateway's NATS user may not use their bucket (see deploy/nats/accounts.conf); statements grants hold are refused",
				"bucket", cfg.Grants.HoldsBucket, "err", nc.NC.LastError())
			return nil, nil
		}
		return h, err
	})
	if err != nil {
		instances.Close(context.WithoutCancel(ctx), true)
		return natsParts{}, err
	}
	parts := natsParts{nc: nc, rec: rec, reader: reader, store: store, instances: instances, console: cs, holds: holds}
	mx.GroupCommit(rec.GroupCommitStats)
	if len(cfg.Notify) > 0 {
		parts.notifier, err = waitFor(startCtx, st, "JetStream stream "+notify.Stream+" (notifications)", func(ctx context.Context) (*notify.Notifier, error) {
			return notify.Open(ctx, notify.Options{
				JS: nc.JS, Targets: cfg.Notify, ConsoleURL: cfg.Console.PublicURL,
				EventsStream: rec.Stream(), EventsPrefix: rec.SubjectPrefix(), Replicas: cfg.Recorder.Replicas,
				Grants: store, Registerer: mx.Registerer(), Log: log,
			})
		})
		if err != nil {
			instances.Close(context.WithoutCancel(ctx), true)
			return natsParts{}, err
		}
	}
	return parts, nil
}

func recorderDesc(cfg *config.Config, nc *natsconn.Conn) string {
	if nc.Embedded() {
		return "embedded JetStream in " + cfg.DataDir
	}
	return cfg.Recorder.NATSURL
}

// newAWS makes the AWS credential provider when a resource needs one (nil
// otherwise), and checks in the background that the gateway has
// credentials, so a missing identity shows in the log at start rather than
// only in the first session's error.
func newAWS(ctx context.Context, cfg *config.Config, host string, log *slog.Logger) (*awsauth.Provider, error) {
	region := ""
	for _, r := range cfg.Resources {
		if r.Auth.Type == "rds-iam" || r.Auth.Type == "ec2-instance-connect" {
			region = r.Auth.Region
			break
		}
	}
	if region == "" {
		return nil, nil
	}
	p, err := awsauth.New(awsauth.Options{
		EndpointURL: cfg.AWS.EndpointURL, CAFile: cfg.AWS.CAFile, RDSConnectRate: cfg.AWS.RDSConnectRate,
		SessionName: sessionName(host), Log: log.With("component", "aws"),
	})
	if err != nil {
		return nil, err
	}
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := p.Check(cctx, region); err != nil {
			log.Warn("AWS resources will refuse sessions until the gateway has credentials", "err", err)
		}
	}()
	return p, nil
}

// sessionName is the RoleSessionName of roles the gateway assumes, so
// CloudTrail tells gateway replicas apart: letters, digits and =,.@- only,
// at most 64 characters.
func sessionName(host string) string {
	b := []byte("airlock-")
	for _, c := range []byte(host) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("=,.@-", c) >= 0 {
			b = append(b, c)
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}
