package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/recorder"
)

// Names the notifier uses in JetStream (docs/notifications.md,
// "Permissions").
const (
	// Stream holds the notifications, on Subjects.<type>.
	Stream        = "AIRLOCK_NOTIFY"
	SubjectPrefix = "airlock.notify"
	// Bucket holds each target's delivery counts, shared by replicas.
	Bucket = "airlock_notify"
	// EventsConsumer is the durable consumer on the events stream that
	// finds interrupted sessions.
	EventsConsumer = "airlock_notify"
	// ConsumerPrefix starts each target's durable consumer's name.
	ConsumerPrefix = "notify_"
)

const (
	// streamMaxAge keeps a notification past the longest retry_for.
	streamMaxAge = config.MaxNotifyRetryFor + 24*time.Hour
	// dupWindow is how long JetStream remembers a notification's id, so
	// replicas that notice the same expiry or event produce one.
	dupWindow = 10 * time.Minute
	// lookback is how old a grant's fact (filed, decided, revoked,
	// expired) may be and still be announced by the grant watcher: less
	// than dupWindow, so a gateway started after a stop does not announce
	// again what was announced before the window forgot it.
	lookback = 5 * time.Minute
	// outboxSize bounds notifications waiting to be stored; past it new
	// ones are dropped (and counted), never waited for.
	outboxSize = 4096
	// workers is how many deliveries to one target run at once.
	workers = 4
)

// Grants is what the notifier reads of the grant store: the grants, to
// find the ones that expired, and what a dead gateway did not announce.
type Grants interface {
	List(keep func(*authz.Grant) bool) []*authz.Grant
}

// Options configure a Notifier.
type Options struct {
	JS jetstream.JetStream
	// Targets are the config's notify list; ConsoleURL its
	// console.public_url.
	Targets    []config.NotifyTarget
	ConsoleURL string
	// EventsStream and EventsPrefix are the recorder's stream and subject
	// prefix, followed for denied statements and interrupted sessions.
	EventsStream string
	EventsPrefix string
	// Replicas of the notifications stream and bucket.
	Replicas int
	Grants   Grants
	// Registerer receives the notifier's metrics; nil: none.
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Notifier produces and delivers notifications. A nil *Notifier does
// nothing.
type Notifier struct {
	o       Options
	log     *slog.Logger
	m       *metrics
	stream  jetstream.Stream
	kv      jetstream.KeyValue
	events  jetstream.Consumer // nil when no target wants session.interrupted
	targets []*target
	wanted  map[string]bool // types some target wants

	outbox chan *Notification
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	announced map[string]time.Time // notification id -> when the grant watcher announced it
}

// Open makes the notifications stream, the status bucket and the durable
// consumers (creating what is missing, keeping what exists), so that
// nothing is published before its consumers exist.
func Open(ctx context.Context, o Options) (*Notifier, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	n := &Notifier{
		o: o, log: o.Log.With("component", "notify"), wanted: map[string]bool{}, announced: map[string]time.Time{},
		// Made here, not in Start: the API may file a request before
		// Start, and its notification waits here until then.
		outbox: make(chan *Notification, outboxSize),
	}
	var err error
	n.stream, err = o.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        Stream,
		Description: "airlock notifications, delivered to the notify targets",
		Subjects:    []string{SubjectPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      streamMaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Duplicates:  dupWindow,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("notify: stream %s: %w", Stream, err)
	}
	n.kv, err = o.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "airlock notification delivery counts per target",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("notify: key-value bucket %s: %w", Bucket, err)
	}
	for i := range o.Targets {
		t, err := n.openTarget(ctx, &o.Targets[i])
		if err != nil {
			return nil, err
		}
		n.targets = append(n.targets, t)
		for _, e := range t.cfg.Events {
			n.wanted[e] = true
		}
	}
	// Denied statements come from the sessions themselves
	// (StatementDenied): following every statement event here would cost
	// each session a delivery per statement.
	var filters []string
	if n.wanted[SessionInterrupted] {
		filters = append(filters, o.EventsPrefix+".*.interrupted")
	}
	if len(filters) > 0 {
		n.events, err = o.JS.CreateOrUpdateConsumer(ctx, o.EventsStream, jetstream.ConsumerConfig{
			Durable:        EventsConsumer,
			Description:    "airlock: interrupted sessions, for notifications",
			DeliverPolicy:  jetstream.DeliverNewPolicy,
			AckPolicy:      jetstream.AckAllPolicy,
			AckWait:        30 * time.Second,
			MaxAckPending:  1000,
			FilterSubjects: filters,
		})
		if err != nil {
			return nil, fmt.Errorf("notify: consumer %s on stream %s: %w", EventsConsumer, o.EventsStream, err)
		}
	}
	// Registered once everything is open: a failed Open is tried again.
	n.m = newMetrics(o.Registerer)
	return n, nil
}

func (n *Notifier) openTarget(ctx context.Context, c *config.NotifyTarget) (*target, error) {
	t := &target{n: n, cfg: *c, where: Redact(c.URL)}
	if c.Format == "standard" {
		key, err := config.DecodeWebhookSecret(c.Secret())
		if err != nil {
			return nil, fmt.Errorf("notify: target %s: secret in %s %v", c.Name, c.SecretEnv, err)
		}
		t.key = key
	}
	filters := make([]string, len(c.Events))
	for i, e := range c.Events {
		filters[i] = SubjectPrefix + "." + e
	}
	slices.Sort(filters)
	var err error
	t.cons, err = n.o.JS.CreateOrUpdateConsumer(ctx, Stream, jetstream.ConsumerConfig{
		Durable:       ConsumerPrefix + c.Name,
		Description:   "airlock notifications to " + t.where,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		// An attempt holds its message for at most the timeout; past
		// AckWait another replica may take it over.
		AckWait:        c.Timeout + 30*time.Second,
		MaxDeliver:     -1,
		MaxAckPending:  10000,
		FilterSubjects: filters,
	})
	if err != nil {
		return nil, fmt.Errorf("notify: consumer %s%s on stream %s: %w", ConsumerPrefix, c.Name, Stream, err)
	}
	t.http = &http.Client{
		Timeout: c.Timeout,
		// Standard Webhooks: only a 2xx is success, redirects are not
		// followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			MaxIdleConnsPerHost:   workers,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   c.Timeout,
			ResponseHeaderTimeout: c.Timeout,
			ForceAttemptHTTP2:     true,
		},
	}
	return t, nil
}

// Start runs the producers (the outbox, the grant watcher, the events
// follower) and each target's delivery until Close.
func (n *Notifier) Start() {
	if n == nil {
		return
	}
	// The notifier's work outlives any request; Close ends it.
	n.ctx, n.cancel = context.WithCancel(context.Background())
	for _, t := range n.targets {
		n.log.Info("notifying", "target", t.cfg.Name, "url", t.where, "format", t.cfg.Format, "events", t.cfg.Events)
	}
	n.go_(n.runOutbox)
	if n.o.Grants != nil {
		n.go_(n.watchGrants)
	}
	if n.events != nil {
		n.go_(n.followEvents)
	}
	for _, t := range n.targets {
		n.go_(t.run)
	}
	n.go_(n.refreshPending)
}

func (n *Notifier) go_(f func()) {
	n.wg.Add(1)
	go func() { defer n.wg.Done(); f() }()
}

// Close stops producing and delivering; an attempt under way ends within
// its target's timeout. What was not delivered stays in the stream for
// the next gateway.
func (n *Notifier) Close() {
	if n == nil || n.cancel == nil {
		return
	}
	n.cancel()
	n.wg.Wait()
}

// Grant announces that grant g changed as typ says (request.created,
// request.approved, request.denied, grant.revoked). It never waits: the
// notification is queued and stored by the outbox.
func (n *Notifier) Grant(typ string, g *authz.Grant) {
	if n == nil || g == nil || !n.wanted[typ] {
		return
	}
	n.enqueue(FromGrant(typ, g, n.o.ConsoleURL, n.o.Now()))
}

// StatementDenied announces a denied statement, given as its recorded
// event, once the gateway serving the session has recorded it. It never
// waits.
func (n *Notifier) StatementDenied(ev *recorder.Event) {
	if n == nil || !n.wanted[StatementDenied] {
		return
	}
	if x := FromEvent(ev, n.o.ConsoleURL); x != nil {
		n.enqueue(x)
	}
}

// StatementHeld announces hold h once it is stored and waits for an
// approver. It never waits.
func (n *Notifier) StatementHeld(h *authz.Hold) {
	if n == nil || h == nil || !n.wanted[StatementHeld] {
		return
	}
	n.enqueue(FromHold(h, n.o.ConsoleURL))
}

func (n *Notifier) enqueue(x *Notification) {
	select {
	case n.outbox <- x:
	default:
		n.m.dropped.Inc()
		n.log.Error("notification dropped: too many waiting to be stored", "id", x.ID, "type", x.Type)
	}
}

// runOutbox stores queued notifications in the stream, each with its id
// as Nats-Msg-Id, retrying while NATS is away.
func (n *Notifier) runOutbox() {
	for {
		select {
		case <-n.ctx.Done():
			n.drainOutbox()
			return
		case x := <-n.outbox:
			n.store(n.ctx, x)
		}
	}
}

// drainOutbox stores what is still queued as the notifier closes, for a
// moment: a gateway stopping right after an approval still announces it.
func (n *Notifier) drainOutbox() {
	// The notifier's context is done; this is the last work it does.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for {
		select {
		case x := <-n.outbox:
			if !n.store(ctx, x) {
				return
			}
		default:
			return
		}
	}
}

// store publishes x until JetStream acknowledges it or the notifier
// closes.
func (n *Notifier) store(ctx context.Context, x *Notification) bool {
	b, err := jsonMarshal(x)
	if err != nil {
		n.log.Error("notification unencodable", "id", x.ID, "err", err)
		return false
	}
	wait := 100 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := n.o.JS.Publish(pctx, SubjectPrefix+"."+x.Type, b, jetstream.WithMsgID(x.ID))
		cancel()
		if err == nil {
			// A duplicate was stored before, by this replica's other
			// producer or by another replica.
			if !ack.Duplicate {
				n.m.produced.WithLabelValues(x.Type).Inc()
				n.log.Debug("notification stored", "id", x.ID, "type", x.Type)
			}
			return true
		}
		n.log.Warn("storing a notification failed; retrying", "id", x.ID, "type", x.Type, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// watchGrants announces what happened to grants recently, as every
// replica sees it in the grant store: expiries, which nobody else
// announces, and requests filed, decided and grants revoked, which the
// grant service announced already (Grant) unless the gateway that
// served it died before storing the notification. Every replica watches;
// a notification's id (the fact's type and grant) makes JetStream keep
// one, and each process announces a fact once.
func (n *Notifier) watchGrants() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		now := n.o.Now()
		var due []*Notification
		n.o.Grants.List(func(g *authz.Grant) bool {
			for _, f := range grantFacts(g, now) {
				if n.wanted[f.typ] {
					due = append(due, FromGrant(f.typ, g, n.o.ConsoleURL, f.at))
				}
			}
			return false
		})
		n.mu.Lock()
		for id, at := range n.announced {
			if now.Sub(at) > 2*lookback {
				delete(n.announced, id)
			}
		}
		fresh := due[:0]
		for _, x := range due {
			if _, done := n.announced[x.ID]; !done {
				n.announced[x.ID] = now
				fresh = append(fresh, x)
			}
		}
		n.mu.Unlock()
		for _, x := range fresh {
			n.enqueue(x)
		}
	}
}

type fact struct {
	typ string
	at  time.Time
}

// grantFacts are the notifiable facts of g that happened within lookback
// before now. A request is a grant its agent asked for; a pre-approved
// grant (asked for by its approver) has no request facts.
func grantFacts(g *authz.Grant, now time.Time) []fact {
	recent := func(t time.Time) bool { return !t.IsZero() && !now.Before(t) && now.Sub(t) < lookback }
	var fs []fact
	requested := g.RequestedBy == g.Agent
	if requested && recent(g.RequestedAt) {
		fs = append(fs, fact{RequestCreated, g.RequestedAt})
	}
	if requested && recent(g.DecidedAt) {
		if g.State == authz.StateDenied {
			fs = append(fs, fact{RequestDenied, g.DecidedAt})
		} else {
			fs = append(fs, fact{RequestApproved, g.DecidedAt})
		}
	}
	if g.State == authz.StateRevoked && recent(g.RevokedAt) {
		fs = append(fs, fact{GrantRevoked, g.RevokedAt})
	}
	// Only an approved grant's expiry is grant.expired: a request that
	// waited past its RequestExpiresAt stays pending and is no grant.
	if g.State == authz.StateActive && recent(g.ExpiresAt) {
		fs = append(fs, fact{GrantExpired, g.ExpiresAt})
	}
	return fs
}

// Redact is a target URL as logs and status show it: scheme and host
// only, since a webhook URL's path often is its secret (Slack).
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host
}

// redactErr is err with any URL in it reduced to scheme and host.
func redactErr(err error, where string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return ue.Op + " " + where + ": timed out"
		}
		return ue.Op + " " + where + ": " + ue.Err.Error()
	}
	// Errors of our own making name no URL.
	return err.Error()
}
