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

// followEvents reads denied statements and interrupted sessions from the
// events stream through the shared durable consumer: each event goes to
// one replica, and is acknowledged once its notification is stored.
func (n *Notifier) followEvents() {
	it, err := n.events.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		n.log.Error("following the events stream for notifications failed", "err", err)
		return
	}
	go func() { <-n.ctx.Done(); it.Stop() }()
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
		n.onEvent(msg)
	}
}

var denyMark = []byte(`"decision":"deny"`)

func (n *Notifier) onEvent(msg jetstream.Msg) {
	data := msg.Data()
	// Most statements are allowed: skip them without decoding.
	if bytes.HasSuffix([]byte(msg.Subject()), []byte(".stmt")) && !bytes.Contains(data, denyMark) {
		_ = msg.Ack()
		return
	}
	var ev recorder.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		n.log.Warn("unreadable event skipped for notifications", "subject", msg.Subject(), "err", err)
		_ = msg.Ack()
		return
	}
	x := FromEvent(&ev, n.o.ConsoleURL)
	if x == nil || !n.wanted[x.Type] {
		_ = msg.Ack()
		return
	}
	if !n.store(n.ctx, x) {
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Ack()
}
