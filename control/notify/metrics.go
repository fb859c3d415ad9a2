package notify

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	produced *prometheus.CounterVec
	dropped  prometheus.Counter
	attempts *prometheus.CounterVec
	failures *prometheus.CounterVec
	givenUp  *prometheus.CounterVec
	pending  *prometheus.GaugeVec
	oldest   *prometheus.GaugeVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		produced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "airlock_notify_produced_total", Help: "Notifications stored for delivery, by type (counted by the replica that stored each; duplicates JetStream dropped are not counted).",
		}, []string{"type"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "airlock_notify_dropped_total", Help: "Notifications dropped before they were stored, because too many waited for NATS.",
		}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "airlock_notify_attempts_total", Help: "Delivery attempts by target and result: ok, timeout, error (connection), 3xx, 4xx, 429, 5xx.",
		}, []string{"target", "result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "airlock_notify_failures_total", Help: "Delivery attempts that failed, by target.",
		}, []string{"target"}),
		givenUp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "airlock_notify_given_up_total", Help: "Notifications given up, by target: a 4xx answer, or retry_for passed.",
		}, []string{"target"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "airlock_notify_pending", Help: "Notifications not yet delivered to a target (waiting or being retried), all replicas together.",
		}, []string{"target"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "airlock_notify_oldest_pending_seconds", Help: "Age of a target's oldest undelivered notification (0: none), refreshed every 15s.",
		}, []string{"target"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "airlock_notify_delivery_age_seconds",
			Help:    "Age of a notification when it was delivered: from being stored to the target's 2xx, retries included.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600},
		}, []string{"target"}),
	}
	if reg != nil {
		reg.MustRegister(m.produced, m.dropped, m.attempts, m.failures, m.givenUp, m.pending, m.oldest, m.latency)
	}
	return m
}
