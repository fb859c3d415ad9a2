// Package natsconn connects the gateway to NATS: the configured cluster, or
// an embedded JetStream server with its data on local disk.
package natsconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// reconnectWait is short because a statement in strict mode waits for
	// its event's ack: the sooner we are back, the fewer statements are
	// refused. The jitter keeps many gateways from reconnecting in lockstep.
	reconnectWait   = 250 * time.Millisecond
	reconnectJitter = 100 * time.Millisecond

	// A server that dies with its host (power, network) sends no RST or
	// FIN: the connection is only found dead by missed pings, and until
	// then nothing the gateway sends through it is acknowledged, so every
	// statement waits and is refused. A ping every 500ms with 2 allowed
	// outstanding finds it dead 1 to 1.5 s after its last answer, then the
	// client reconnects to another server at once (a SIGKILLed server's
	// kernel closes the connection, which is noticed immediately). A
	// server busy enough to leave pings unanswered that long costs a
	// reconnect, not an error. The nats.go default (2m x 2) is far too long.
	pingInterval = 500 * time.Millisecond
	maxPingsOut  = 2

	// readyTimeout bounds how long an embedded server may take to start
	// (it replays its store on start, which takes a while on a big store).
	readyTimeout = 10 * time.Second

	// maxAsyncPending is the number of unacknowledged async publishes the
	// JetStream context allows before PublishMsgAsync stalls. The recorder
	// keeps its own bounded outbox per session (10000) and never wants the
	// library to stall the hot path, so this is sized for many concurrent
	// sessions each with a few events in flight, not for one session.
	maxAsyncPending = 16384

	// DefaultAckTimeout is how long the JetStream context keeps an async
	// publish waiting for its ack before failing it. Without it a publish
	// whose ack is lost (written just before a disconnect) would stay
	// registered forever; the recorder republishes it with the same
	// Nats-Msg-Id, so a late or lost ack costs a deduplicated resend.
	DefaultAckTimeout = 2 * time.Second

	// drainTimeout bounds Close: a drain waits for pending acks, and a
	// gateway shutting down must not hang on an unreachable cluster.
	drainTimeout = 5 * time.Second
)

// Options says which NATS to use and how to identify ourselves to it.
type Options struct {
	// URL of the NATS cluster (comma-separated for several seeds). Empty:
	// run an embedded JetStream server in DataDir.
	URL string
	// CredentialsFile authenticates to URL: a NATS .creds file (user JWT
	// and seed, for servers in operator mode) or a file holding only a
	// user nkey seed ("SU..."; for users listed by nkey in the server
	// configuration, as in deploy/nats).
	CredentialsFile string
	// DataDir of an embedded server; its JetStream store goes in
	// DataDir/jetstream. Required when URL is empty.
	DataDir string
	// EmbeddedListen is an optional host:port where the embedded server
	// also accepts TCP clients, so external tools (the nats CLI) can read
	// the events. Empty: in-process connections only, nothing listens.
	// Port 0 picks a free port (see ClientURL).
	EmbeddedListen string
	// SyncAlways makes the embedded server fsync every write before it
	// acknowledges it (JetStream sync_interval: always). Off, an
	// acknowledged event is in the OS page cache and reaches the disk
	// within the server's sync interval (2 minutes by default): it
	// survives the gateway process dying, not the machine losing power.
	SyncAlways bool
	// Name is the connection name shown by the server (nats server report).
	Name string
	// AckTimeout is the JetStream async publish ack timeout; zero means
	// DefaultAckTimeout.
	AckTimeout time.Duration
	// Logger receives connection state changes; nil discards them.
	Logger *slog.Logger
}

// Conn is a NATS connection and its JetStream context, plus the embedded
// server when there is one.
type Conn struct {
	NC *nats.Conn
	JS jetstream.JetStream

	embedded  *server.Server
	closed    chan struct{} // closed by the ClosedHandler
	closeOnce sync.Once
	log       *slog.Logger
}

// Connect connects to o.URL, or starts an embedded server when o.URL is
// empty and connects to it in-process. ctx bounds the initial connect.
func Connect(ctx context.Context, o Options) (*Conn, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Conn{closed: make(chan struct{}), log: log}

	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitter),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		// The cluster's other servers (its connect_urls) join the pool
		// the client reconnects from, so one seed URL is enough to fail
		// over to any server.
		nats.DiscoveredServersHandler(func(nc *nats.Conn) {
			log.Info("nats servers discovered", "servers", nc.DiscoveredServers())
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("nats async error", "subject", sub.Subject, "err", err)
				return
			}
			log.Warn("nats async error", "err", err)
		}),
	}
	if d, ok := ctx.Deadline(); ok {
		if left := time.Until(d); left > 0 {
			opts = append(opts, nats.Timeout(left))
		} else {
			return nil, fmt.Errorf("natsconn: connect: %w", context.DeadlineExceeded)
		}
	}

	url := o.URL
	if url == "" {
		s, err := startEmbedded(o, log)
		if err != nil {
			return nil, err
		}
		c.embedded = s
		opts = append(opts, nats.InProcessServer(s))
	} else if o.CredentialsFile != "" {
		opt, err := credentials(o.CredentialsFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, opt)
	}

	nc, err := nats.Connect(url, opts...)
	if err != nil {
		c.shutdownEmbedded()
		if o.URL == "" {
			return nil, fmt.Errorf("natsconn: connect to embedded server: %w", err)
		}
		return nil, fmt.Errorf("natsconn: connect to %s: %w", o.URL, err)
	}
	c.NC = nc

	ackTimeout := o.AckTimeout
	if ackTimeout <= 0 {
		ackTimeout = DefaultAckTimeout
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(maxAsyncPending),
		jetstream.WithPublishAsyncTimeout(ackTimeout),
	)
	if err != nil {
		nc.Close()
		c.shutdownEmbedded()
		return nil, fmt.Errorf("natsconn: jetstream: %w", err)
	}
	c.JS = js
	if c.embedded == nil {
		log.Info("nats connected", "url", nc.ConnectedUrlRedacted())
	}
	return c, nil
}

// ErrCredentials is wrapped by Connect's errors about
// Options.CredentialsFile: missing, unreadable or of an unknown kind.
var ErrCredentials = errors.New("unusable credentials file")

// credentials picks the nats.go option for a credentials file by its
// content: a JWT means a .creds file, a bare seed an nkey user.
func credentials(path string) (nats.Option, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("natsconn: credentials: %w (%w)", err, ErrCredentials)
	}
	if bytes.Contains(b, []byte("BEGIN NATS USER JWT")) {
		return nats.UserCredentials(path), nil
	}
	if s := bytes.TrimSpace(b); bytes.HasPrefix(s, []byte("SU")) && !bytes.ContainsAny(s, " \n") {
		opt, err := nats.NkeyOptionFromSeed(path)
		if err != nil {
			return nil, fmt.Errorf("natsconn: credentials %s: %w (%w)", path, err, ErrCredentials)
		}
		return opt, nil
	}
	return nil, fmt.Errorf("natsconn: credentials %s: neither a .creds file (user JWT and seed) nor a user nkey seed (SU...) (%w)", path, ErrCredentials)
}

// startEmbedded runs a JetStream server storing in o.DataDir/jetstream.
func startEmbedded(o Options, log *slog.Logger) (*server.Server, error) {
	if o.DataDir == "" {
		return nil, errors.New("natsconn: embedded server: data dir required")
	}
	sopts := &server.Options{
		ServerName: "airlock-embedded",
		JetStream:  true,
		// The server appends "jetstream" itself, giving DataDir/jetstream.
		StoreDir: o.DataDir,
		Host:     "127.0.0.1",
		Port:     server.RANDOM_PORT,
		// The gateway is the only process that owns this server; signals
		// belong to the gateway.
		NoSigs:     true,
		SyncAlways: o.SyncAlways,
	}
	if o.EmbeddedListen == "" {
		sopts.DontListen = true
	} else {
		host, portStr, err := net.SplitHostPort(o.EmbeddedListen)
		if err != nil {
			return nil, fmt.Errorf("natsconn: embedded listen %q: %w", o.EmbeddedListen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 0 || port > 65535 {
			return nil, fmt.Errorf("natsconn: embedded listen %q: bad port", o.EmbeddedListen)
		}
		if host != "" {
			sopts.Host = host
		}
		if port != 0 {
			sopts.Port = port
		}
	}
	s, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("natsconn: embedded server: %w", err)
	}
	s.SetLoggerV2(serverLogger{log.With("component", "nats-server")}, false, false, false)
	s.Start()
	if !s.ReadyForConnections(readyTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("natsconn: embedded server in %s not ready after %s", o.DataDir, readyTimeout)
	}
	if sopts.DontListen {
		log.Info("embedded nats started", "store", sopts.StoreDir, "listen", "in-process")
	} else {
		log.Info("embedded nats started", "store", sopts.StoreDir, "listen", s.ClientURL())
	}
	return s, nil
}

// Embedded reports whether this connection runs its own server.
func (c *Conn) Embedded() bool { return c.embedded != nil }

// ClientURL is the URL external tools can use: the embedded server's
// listen address, the connected server otherwise. Empty for an embedded
// server that does not listen.
func (c *Conn) ClientURL() string {
	if c.embedded != nil {
		if c.embedded.Addr() == nil {
			return ""
		}
		return c.embedded.ClientURL()
	}
	return c.NC.ConnectedUrlRedacted()
}

// Close drains the connection, so acks of publishes already sent are still
// received, then shuts the embedded server down and waits for it, so its
// store is closed before the process exits or a new server opens it.
func (c *Conn) Close() {
	c.closeOnce.Do(func() {
		if c.NC != nil {
			if err := c.NC.Drain(); err != nil {
				c.NC.Close()
			}
			select {
			case <-c.closed:
			case <-time.After(drainTimeout):
				c.log.Warn("nats drain timed out; closing", "timeout", drainTimeout)
				c.NC.Close()
				<-c.closed
			}
		}
		c.shutdownEmbedded()
	})
}

func (c *Conn) shutdownEmbedded() {
	if c.embedded == nil {
		return
	}
	c.embedded.Shutdown()
	c.embedded.WaitForShutdown()
	c.log.Info("embedded nats stopped")
}

// serverLogger sends the embedded server's log to slog. Notices go to
// debug: the server's start banner is a screenful that says nothing the
// gateway's own "embedded nats started" line does not.
type serverLogger struct{ l *slog.Logger }

func (s serverLogger) Noticef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLogger) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s serverLogger) Fatalf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s serverLogger) Errorf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s serverLogger) Debugf(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLogger) Tracef(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
