package testenv

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Webhook is a webhook receiver on a loopback port, as a notification
// target. It checks Standard Webhooks signatures with its own
// implementation of the spec (https://www.standardwebhooks.com), not the
// gateway's, and refuses a request whose signature, id or timestamp is
// wrong (401, counted in Rejected). What it answers to a good request is
// up to Respond.
type Webhook struct {
	URL string // http://127.0.0.1:PORT/hook/<random path, as a secret part>
	// Key is the signing key; nil: signatures are not checked (Slack).
	Key []byte
	// Secret is the whsec_ form of Key.
	Secret string

	mu       sync.Mutex
	respond  func(d *Delivery) (status int, header http.Header)
	received []*Delivery
	rejected []string
	arrived  chan struct{}
	srv      *http.Server
	ln       net.Listener
}

// Delivery is one request the receiver accepted as authentic.
type Delivery struct {
	At     time.Time
	ID     string // webhook-id
	Time   int64  // webhook-timestamp
	Body   []byte
	Header http.Header
	// Status is what the receiver answered.
	Status int
}

// Decode decodes the body into v.
func (d *Delivery) Decode(v any) error { return json.Unmarshal(d.Body, v) }

// WebhookOptions shape StartWebhook.
type WebhookOptions struct {
	// Unsigned receives without checking signatures (a Slack target).
	Unsigned bool
}

// StartWebhook starts a receiver with a fresh 32-byte secret; it answers
// 204 until told otherwise (Respond).
func StartWebhook(t testing.TB, o WebhookOptions) *Webhook {
	t.Helper()
	w := &Webhook{arrived: make(chan struct{}, 1)}
	if !o.Unsigned {
		w.Key = make([]byte, 32)
		if _, err := rand.Read(w.Key); err != nil {
			t.Fatal(err)
		}
		w.Secret = "whsec_" + base64.StdEncoding.EncodeToString(w.Key)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.ln = ln
	w.URL = fmt.Sprintf("http://%s/hook/T0SECRETPATH/%d", ln.Addr(), time.Now().UnixNano())
	w.serveOn(ln)
	t.Cleanup(w.Stop)
	return w
}

func (w *Webhook) serveOn(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(w.serve), ReadHeaderTimeout: 10 * time.Second}
	w.mu.Lock()
	w.srv, w.ln = srv, ln
	w.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// Stop closes the receiver: connections to it are refused until Start.
func (w *Webhook) Stop() {
	w.mu.Lock()
	srv := w.srv
	w.srv = nil
	w.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Start listens again on the receiver's address after Stop.
func (w *Webhook) Start(t testing.TB) {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the old socket may linger a moment
		if ln, err = net.Listen("tcp", w.ln.Addr().String()); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	w.serveOn(ln)
}

// Respond sets what the receiver answers to each authentic request; the
// function may sleep. nil: 204.
func (w *Webhook) Respond(f func(d *Delivery) (int, http.Header)) {
	w.mu.Lock()
	w.respond = f
	w.mu.Unlock()
}

func (w *Webhook) serve(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/hook/") {
		http.Error(rw, "bad request", http.StatusBadRequest)
		return
	}
	d := &Delivery{At: time.Now(), Body: body, Header: r.Header.Clone()}
	if w.Key != nil {
		ts, err := w.verify(r.Header, body, time.Now())
		if err != nil {
			w.mu.Lock()
			w.rejected = append(w.rejected, err.Error())
			w.mu.Unlock()
			http.Error(rw, err.Error(), http.StatusUnauthorized)
			return
		}
		d.ID, d.Time = r.Header.Get("webhook-id"), ts
	}
	w.mu.Lock()
	f := w.respond
	w.mu.Unlock()
	status, hdr := http.StatusNoContent, http.Header(nil)
	if f != nil {
		status, hdr = f(d)
	}
	d.Status = status
	w.mu.Lock()
	w.received = append(w.received, d)
	w.mu.Unlock()
	select {
	case w.arrived <- struct{}{}:
	default:
	}
	for k, vs := range hdr {
		for _, v := range vs {
			rw.Header().Add(k, v)
		}
	}
	rw.WriteHeader(status)
}

// verify checks a request as the spec says: webhook-id and
// webhook-timestamp present, the timestamp within 5 minutes of now, and
// one of the space-separated "v1,<base64>" signatures equal to the
// HMAC-SHA256, under the key, of "id.timestamp.body".
func (w *Webhook) verify(h http.Header, body []byte, now time.Time) (int64, error) {
	id, tsText, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || tsText == "" || sigs == "" {
		return 0, fmt.Errorf("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("webhook-timestamp %q is not unix seconds", tsText)
	}
	if d := now.Unix() - ts; d > 300 || d < -300 {
		return 0, fmt.Errorf("webhook-timestamp %d is %ds from now", ts, d)
	}
	mac := hmac.New(sha256.New, w.Key)
	io.WriteString(mac, id+"."+tsText+".")
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return ts, nil
		}
	}
	return 0, fmt.Errorf("no valid v1 signature in %q", sigs)
}

// Received returns the requests accepted so far.
func (w *Webhook) Received() []*Delivery {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*Delivery(nil), w.received...)
}

// Rejected returns why requests were refused as not authentic.
func (w *Webhook) Rejected() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.rejected...)
}

// Delivered returns the accepted requests answered with a 2xx.
func (w *Webhook) Delivered() []*Delivery {
	var out []*Delivery
	for _, d := range w.Received() {
		if d.Status >= 200 && d.Status < 300 {
			out = append(out, d)
		}
	}
	return out
}

// WaitFor waits until ok holds for the accepted requests, up to within;
// it returns whether it did.
func (w *Webhook) WaitFor(within time.Duration, ok func([]*Delivery) bool) bool {
	deadline := time.Now().Add(within)
	for {
		if ok(w.Received()) {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		select {
		case <-w.arrived:
		case <-time.After(min(left, 50*time.Millisecond)):
		}
	}
}
