package notify

import (
	"bytes"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/recorder"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// followEvents reads interrupted sessions (and, were the consumer's filter
// to include them, denied statements) from the events stream through the
// shared durable consumer: each event goes to one replica, and is
// acknowledged once its notification is stored.
func (n *Notifier) followEvents() {
	it, err := n.events.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		n.log.Error("following the events stream for notifications failed", "err", err)
		return
	}
	go func() { <-n.ctx.Done(); it.Stop() }()
	var unacked int // messages skipped since the last acknowledgement
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			// The iterator recovers by itself; do not spin meanwhile.
			n.log.Debug("events stream", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if n.onEvent(msg) {
			unacked = 0
			continue
		}
		// The consumer acknowledges all up to a message (AckAll): a
		// skipped event, nearly every statement, is acknowledged only
		// every 100 messages or when the stream has nothing more, which
		// spares NATS an acknowledgement per statement. Skipped events
		// read again after a crash are skipped again.
		unacked++
		if md, err := msg.Metadata(); unacked >= 100 || err != nil || md.NumPending == 0 {
			_ = msg.Ack()
			unacked = 0
		}
	}
}

var denyMark = []byte(`"decision":"deny"`)

// onEvent stores the notification msg calls for, and acknowledges it
// (with every message before it) once stored; it reports whether it
// acknowledged or refused msg, false when msg needs nothing.
func (n *Notifier) onEvent(msg jetstream.Msg) bool {
	data := msg.Data()
	// Most statements are allowed: skip them without decoding.
	if bytes.HasSuffix([]byte(msg.Subject()), []byte(".stmt")) && !bytes.Contains(data, denyMark) {
		return false
	}
	var ev recorder.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		n.log.Warn("unreadable event skipped for notifications", "subject", msg.Subject(), "err", err)
		return false
	}
	x := FromEvent(&ev, n.o.ConsoleURL)
	if x == nil || !n.wanted[x.Type] {
		return false
	}
	if !n.store(n.ctx, x) {
		_ = msg.NakWithDelay(time.Second)
		return true
	}
	_ = msg.Ack()
	return true
}
