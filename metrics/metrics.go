// Package metrics exposes the gateway's Prometheus metrics and, beside
// them, the Go runtime's profiles for operators.
package metrics

import (
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics counts what the gateway does. It implements proxy.Observer.
type Metrics struct {
	reg           *prometheus.Registry
	sessions      *prometheus.GaugeVec
	sessionsTotal *prometheus.CounterVec
	authFailures  *prometheus.CounterVec
	loginLocks    *prometheus.CounterVec
	statements    *prometheus.CounterVec
	commit        prometheus.Histogram
	commitErrors  prometheus.Counter
}

// New registers the gateway's metrics in a registry of their own, with the
// Go and process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		reg: reg,
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "airlock_sessions", Help: "Live sessions.",
		}, []string{"proto"}),
		sessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "airlock_sessions_total", Help: "Sessions started.",
		}, []string{"proto"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "airlock_auth_failures_total", Help: "Refused logins, by reason.",
		}, []string{"proto", "reason"}),
		loginLocks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "airlock_login_lockouts_total", Help: "Client addresses (scope source) and agents (scope agent) locked out after too many failed logins (limits.login_failures).",
		}, []string{"proto", "scope"}),
		statements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "airlock_statements_total", Help: "Statements decided, by decision.",
		}, []string{"proto", "decision"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "airlock_recorder_commit_seconds",
			Help:    "Time a statement waited for the recorder's acknowledgement.",
			Buckets: []float64{50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 50e-3, 0.25, 1, 2.5},
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "airlock_recorder_commit_failures_total", Help: "Statements refused because the recorder did not acknowledge.",
		}),
	}
	reg.MustRegister(m.sessions, m.sessionsTotal, m.authFailures, m.loginLocks, m.statements, m.commit, m.commitErrors)
	return m
}

// Registerer is where other parts (notifications) register their metrics,
// served beside the gateway's.
func (m *Metrics) Registerer() prometheus.Registerer { return m.reg }

// SessionStarted counts a new session.
func (m *Metrics) SessionStarted(proto string) {
	m.sessions.WithLabelValues(proto).Inc()
	m.sessionsTotal.WithLabelValues(proto).Inc()
}

// SessionEnded counts a session's end.
func (m *Metrics) SessionEnded(proto string) { m.sessions.WithLabelValues(proto).Dec() }

// AuthFailed counts a refused login.
func (m *Metrics) AuthFailed(proto, reason string) {
	m.authFailures.WithLabelValues(proto, reason).Inc()
}

// LoginLocked counts a lockout after repeated failed logins.
func (m *Metrics) LoginLocked(proto, scope string) {
	m.loginLocks.WithLabelValues(proto, scope).Inc()
}

// Statements counts decided statements.
func (m *Metrics) Statements(proto string, allowed, denied int) {
	if allowed > 0 {
		m.statements.WithLabelValues(proto, "allow").Add(float64(allowed))
	}
	if denied > 0 {
		m.statements.WithLabelValues(proto, "deny").Add(float64(denied))
	}
}

// Committed observes one wait for the recorder.
func (m *Metrics) Committed(d time.Duration, err error) {
	m.commit.Observe(d.Seconds())
	if err != nil {
		m.commitErrors.Inc()
	}
}

// GroupCommit serves the recorder's group-commit counters (the messages
// its publisher sent, and the events they carried: their ratio is the
// average batch), read from stats at each scrape.
func (m *Metrics) GroupCommit(stats func() (messages, events uint64)) {
	_ = m.reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "airlock_recorder_messages_total",
		Help: "Messages the recorder's group-commit publisher sent: an event alone, or a batch of events.",
	}, func() float64 { n, _ := stats(); return float64(n) }))
	_ = m.reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "airlock_recorder_events_published_total",
		Help: "Events the recorder's group-commit publisher sent, alone or in batches (republishes not counted).",
	}, func() float64 { _, n := stats(); return float64(n) }))
}

// Handler serves /metrics and /debug/pprof/.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
