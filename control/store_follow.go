package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/natsconn"
)

// How the store follows its buckets, and why that is safe.
//
// Each bucket has a poller that asks the bucket's stream leader for the
// first message after the newest revision the store has read (a
// STREAM.MSG.GET with next_by_subj, which only the leader answers). A
// message is applied and the next one asked for at once; "no message"
// means the store held everything the bucket had when the leader answered,
// which is after the request was sent, so the request's send time is when
// the store was last confirmed current. A leader applies a write before it
// acknowledges it, so every change acknowledged before that time was read.
//
// Ready holds for ConfirmWithin after the newest confirmation, from either
// bucket: every change is acknowledged only once both buckets stored it,
// so either one's leader can vouch for it. A revocation acknowledged at T
// is therefore applied (ending the grant's sessions) or the replica
// refuses every statement by T + ConfirmWithin. A replica loses nothing by
// a dropped connection: its pollers go on from the revision they had, no
// re-read. And no consumer is involved, so nothing waits for the meta
// leader when a server dies.
//
// Every change is also announced on a plain NATS subject once stored, and
// a notice makes every replica's pollers ask at once instead of at their
// next turn: a new or approved grant works on every replica within
// milliseconds. A revocation is announced before it is stored as well, and
// that notice itself revokes the grant on every replica (it only ever
// revokes, and is kept until a bucket holds the revocation): the sessions
// end at once even while a bucket elects a leader.

// poll follows b until ctx ends. Requests go out every pollEvery whether
// or not the one before was answered, so one lost with a connection (its
// answer never comes) delays nothing: the next goes out on the new
// connection. Each asks about the revision the store had when it was sent,
// which is what its answer confirms.
func (s *Store) poll(ctx context.Context, b *bucket) {
	defer s.wg.Done()
	type answer struct {
		m    *storedMsg
		err  error
		sent time.Time
	}
	answers := make(chan answer, maxInFlight)
	inFlight := 0
	ask := func() {
		if inFlight >= maxInFlight {
			return
		}
		inFlight++
		rev, sent := b.rev, time.Now()
		go func() {
			m, err := s.next(ctx, b, rev)
			answers <- answer{m, err, sent}
		}()
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var (
		failing string
		lastOK  time.Time // when the newest confirming request was sent
	)
	ask()
	for {
		select {
		case <-ctx.Done():
			for ; inFlight > 0; inFlight-- {
				<-answers
			}
			return
		case <-tick.C:
			ask()
		case <-b.wake:
			ask()
		case a := <-answers:
			inFlight--
			switch {
			case a.err == nil:
				if a.m.Seq > b.rev {
					s.applyMsg(b, a.m)
				}
				ask() // there may be more
			case errors.Is(a.err, errNoMessage):
				s.confirm(a.sent)
				if a.sent.After(lastOK) {
					lastOK = a.sent
				}
				if failing != "" {
					s.log.Info("grant bucket readable again", "bucket", b.name)
					failing = ""
				}
			case ctx.Err() != nil, a.sent.Before(lastOK):
				// Old news: a later request has been answered.
			default:
				if msg := a.err.Error(); msg != failing {
					// Expected while the bucket elects a leader or NATS is
					// away; logged once per cause.
					s.log.Warn("grant bucket unreadable", "bucket", b.name, "err", a.err)
					failing = msg
				}
			}
		}
	}
}

// maxInFlight bounds the unanswered requests of one poller: pollTimeout
// over pollEvery, and one more.
const maxInFlight = int(pollTimeout/pollEvery) + 1

// errNoMessage is the leader's answer when nothing follows the revision
// asked about.
var errNoMessage = errors.New("no message found")

// storedMsg is a message as STREAM.MSG.GET returns it.
type storedMsg struct {
	Subject string `json:"subject"`
	Seq     uint64 `json:"seq"`
	Header  []byte `json:"hdrs,omitempty"`
	Data    []byte `json:"data,omitempty"`
}

// next asks b's leader for the first message after revision rev.
func (s *Store) next(ctx context.Context, b *bucket, rev uint64) (*storedMsg, error) {
	req, err := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{rev + 1, b.prefix + ">"})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	reply, err := s.nc.RequestWithContext(rctx, s.api+"STREAM.MSG.GET."+b.stream, req)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Message *storedMsg          `json:"message"`
		Error   *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("reading %s: %w", b.stream, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, errNoMessage
		}
		return nil, resp.Error
	}
	if resp.Message == nil || resp.Message.Seq <= rev {
		return nil, fmt.Errorf("reading %s: no message in the answer after revision %d", b.stream, rev)
	}
	return resp.Message, nil
}

// applyMsg applies one stored message of b: a grant written, or its key
// deleted or purged.
func (s *Store) applyMsg(b *bucket, m *storedMsg) {
	defer func() { b.rev = m.Seq }()
	key, ok := strings.CutPrefix(m.Subject, b.prefix)
	if !ok {
		return
	}
	if len(m.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(m.Header)
		if err != nil {
			s.log.Error("grant record unreadable", "bucket", b.name, "key", key, "revision", m.Seq, "err", err)
			return
		}
		if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" || h.Get(jetstream.MarkerReasonHeader) != "" {
			s.apply(b, key, nil, m.Seq)
			return
		}
	}
	g := new(authz.Grant)
	if err := json.Unmarshal(m.Data, g); err != nil {
		s.log.Error("grant record unreadable", "bucket", b.name, "key", key, "revision", m.Seq, "err", err)
		return
	}
	s.apply(b, key, g, m.Seq)
}

// notice tells every replica that a grant changed, or is being revoked.
type notice struct {
	Grant string `json:"grant"`
	// Revoked: the grant is revoked, by By at At, whether or not the
	// buckets have it yet.
	Revoked bool      `json:"revoked,omitempty"`
	By      string    `json:"by,omitempty"`
	At      time.Time `json:"at,omitzero"`
}

// announce tells every replica (this one included) that g changed, or,
// with revoked, that it is revoked.
func (s *Store) announce(g *authz.Grant, revoked bool) {
	n := notice{Grant: g.ID}
	if revoked {
		n.Revoked, n.By, n.At = true, g.RevokedBy, g.RevokedAt
	}
	b, err := json.Marshal(n)
	if err == nil {
		err = s.nc.Publish(s.subject, b)
	}
	if err != nil {
		s.log.Warn("grant notice not sent; replicas learn the change from the buckets", "grant", g.ID, "err", err)
	}
	if !revoked {
		return
	}
	// A publish written into a connection whose server just died is lost
	// without an error, and a replica that was reconnecting missed it:
	// send it again a few times over noticeFor.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		start := time.Now()
		for _, at := range noticeAgain {
			time.Sleep(time.Until(start.Add(at)))
			_ = s.nc.Publish(s.subject, b)
		}
	}()
}

// noticeAgain is when, after the first, a revocation notice is sent
// again: replicas dealing with a lost server reconnect within
// milliseconds when it was killed, about 1.5 s when it went silent.
var noticeAgain = []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 700 * time.Millisecond, 1500 * time.Millisecond}

// onNotice applies a notice: a revocation at once, and any change by
// asking the buckets now.
func (s *Store) onNotice(m *nats.Msg) {
	var n notice
	if err := json.Unmarshal(m.Data, &n); err != nil || n.Grant == "" {
		s.log.Warn("grant notice unreadable", "err", err)
		return
	}
	for _, b := range s.buckets {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	if !n.Revoked {
		return
	}
	s.mu.Lock()
	s.revoking[n.Grant] = n
	changed := s.mergeLocked(n.Grant)
	fns := s.watchFn
	s.mu.Unlock()
	if changed != nil {
		for _, fn := range fns {
			fn(changed)
		}
	}
}

// reconcile copies into each bucket the grants another bucket holds
// further on: grants stored before the standby existed, and changes a
// writer stored in one bucket only before it failed. Copies only ever
// move a grant forward, so they are safe beside concurrent writers.
func (s *Store) reconcile(ctx context.Context) {
	type fix struct {
		to *bucket
		g  *authz.Grant
	}
	var fixes []fix
	s.mu.RLock()
	// The furthest copy a bucket holds (not what notices say: a notice
	// is not a stored change), and the buckets behind it.
	best := map[string]*authz.Grant{}
	for _, b := range s.buckets {
		for id, r := range b.recs {
			if cur, ok := best[id]; r.g != nil && (!ok || rank(r.g) > rank(cur)) {
				best[id] = r.g
			}
		}
	}
	for id, g := range best {
		for _, b := range s.buckets {
			if r, ok := b.recs[id]; !ok || rank(r.g) < rank(g) {
				fixes = append(fixes, fix{b, g})
			}
		}
	}
	s.mu.RUnlock()
	for _, f := range fixes {
		data, err := json.Marshal(f.g)
		if err != nil {
			continue
		}
		rev, err := retryWrite(ctx, func(ctx context.Context) (uint64, error) { return f.to.kv.Put(ctx, f.g.ID, data) })
		if err != nil {
			s.log.Warn("grant not copied between buckets", "grant", f.g.ID, "to", f.to.name, "err", err)
			continue
		}
		s.apply(f.to, f.g.ID, f.g, rev)
	}
	if len(fixes) > 0 {
		s.log.Info("grants copied between buckets", "count", len(fixes))
	}
}

// keepApart keeps the two buckets' leaders on different servers, and
// reconciles the buckets every reconcileEvery.
func (s *Store) keepApart(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	reconciled := time.Now()
	for first := true; ; first = false {
		if time.Since(reconciled) >= reconcileEvery {
			s.reconcile(ctx)
			reconciled = time.Now()
		}
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		l, err := natsconn.KeepApart(cctx, s.js, s.buckets[0].stream, s.buckets[1].stream)
		cancel()
		if err != nil && ctx.Err() == nil {
			s.log.Debug("grant buckets: leader lookup failed", "err", err)
		}
		if l.Moved != "" {
			s.log.Info("standby grants bucket's leader moved off the grants bucket's leader",
				"bucket", s.buckets[1].name, "from", l.Primary, "to", l.Moved)
		}
	}
}
