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
func runGateway(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	tuneGC(gcHeadroom)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	host, _ := os.Hostname()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	signer, created, err := recorder.LoadSigningKey(cfg.Recorder.SigningKeyFile, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("recorder.signing_key_file: %w", err)
	}
	// Reviewers compare this fingerprint with the key of what they verify.
	log.Info("event signing key", "fingerprint", signer.Fingerprint(), "public_key", signer.Public().Key, "generated", created)

	nc, err := natsconn.Connect(startCtx, natsconn.Options{
		URL: cfg.Recorder.NATSURL, CredentialsFile: cfg.Recorder.CredentialsFile,
		DataDir: cfg.DataDir, EmbeddedListen: cfg.Recorder.EmbeddedListen,
		SyncAlways: cfg.Recorder.EmbeddedSyncAlways,
		Name:       "airlock-gateway " + host, Logger: log,
	})
	if err != nil {
		return err
	}
	defer nc.Close()
	// On a cluster, events and grants each have a standby that takes over
	// at once when a server dies, instead of waiting out an election
	// (docs/recorder.md, "Losing a node").
	failover := cfg.Recorder.Replicas > 1
	rec, err := recorder.New(startCtx, nc.JS, recorder.Options{
		Stream: cfg.Recorder.Stream, Replicas: cfg.Recorder.Replicas,
		PublishTimeout: cfg.Recorder.PublishTimeout, SignInterval: cfg.Recorder.SignInterval, Gateway: host, Logger: log,
		Signer: signer, MaxAge: cfg.Recorder.MaxAge, MaxBytes: cfg.Recorder.MaxBytes, MaxMsgs: cfg.Recorder.MaxMsgs,
		Failover: failover,
	})
	if err != nil {
		return err
	}
	defer rec.Close()
	store, err := control.OpenStore(startCtx, nc.NC, nc.JS, control.StoreOptions{
		Bucket: cfg.Grants.Bucket, Replicas: cfg.Recorder.Replicas, Standby: failover, Logger: log,
	})
	if err != nil {
		return err
	}
	defer store.Close()
	tlsCfg, err := proxy.LoadTLS(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.DataDir)
	if err != nil {
		return err
	}

	aws, err := newAWS(ctx, cfg, host, log)
	if err != nil {
		return err
	}

	mx := metrics.New()
	srv := &proxy.Server{Config: cfg, Grants: store, Recorder: rec, Log: log, Gateway: host, Observer: mx}
	api := &control.API{
		Service:  &control.Service{Store: store, Config: cfg},
		Sessions: recorder.NewReader(nc.JS, rec.Stream(), rec.SubjectPrefix()),
		Keys:     []recorder.PublicKey{signer.Public()},
		Stream:   rec.Stream(),
		Log:      log,
	}
	httpLn, err := net.Listen("tcp", cfg.Listen.HTTP)
	if err != nil {
		return fmt.Errorf("listen.http: %w", err)
	}
	hs := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 4)
	go func() {
		log.Info("HTTP API listening", "addr", httpLn.Addr().String())
		if err := hs.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
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
	var listeners []net.Listener
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
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	_ = hs.Shutdown(sctx)
	_ = srv.Shutdown(sctx)
	return err
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
