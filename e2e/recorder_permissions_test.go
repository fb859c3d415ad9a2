package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/control/console"
	"github.com/airlockhq/airlock/natsconn"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// violations collects the permission errors the server sends a
// connection, which is how a refused publish or subscribe is reported.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err.Error())
}

// wait returns once a permissions violation naming subject has arrived.
func (v *violations) wait(t *testing.T, subject string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		v.mu.Lock()
		for _, e := range v.errs {
			if strings.Contains(strings.ToLower(e), "permissions violation") && strings.Contains(e, subject) {
				v.mu.Unlock()
				return
			}
		}
		v.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	t.Fatalf("no permissions violation for %s; got %q", subject, v.errs)
}

func connectAs(t *testing.T, c *testenv.NATSCluster, u *testenv.NATSUsers, user string, v *violations, extra ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts := append([]nats.Option{u.Option(t, user), nats.ErrorHandler(v.handler)}, extra...)
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// TestRecorderNATSPermissions runs the gateway's recorder and grant store
// as the gateway user of deploy/nats against a real 3-node cluster with
// that configuration, then proves that the gateway, the reviewer and the
// operator are each refused what they must not do to the events stream.
func TestRecorderNATSPermissions(t *testing.T) {
	u := testenv.NewNATSUsers(t)
	c := testenv.StartDeployNATSCluster(t, u)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The gateway, connected the way the gateway connects (natsconn with
	// an nkey seed as recorder.credentials_file), does its whole job.
	gw, rec := gatewayRecorder(ctx, t, c.URL, u.SeedFiles["gateway"], "perm-test", recorder.Options{Failover: true})
	l := rec.Open("ses_perm", recorder.Meta{Agent: "a", Resource: "r", Protocol: "postgres", Client: "c"})
	l.Append(recorder.Event{Type: recorder.TypeSessionStart})
	l.Append(recorder.Event{Type: recorder.TypeSessionEnd, End: &recorder.End{Reason: "done"}})
	if err := l.Commit(ctx); err != nil {
		t.Fatalf("publish as the gateway user: %v", err)
	}
	if _, err := recorder.NewReader(gw.JS, "AIRLOCK_EVENTS", "").Events(ctx, "ses_perm"); err != nil {
		t.Fatalf("read as the gateway user: %v", err)
	}
	if _, err := recorder.NewReader(gw.JS, "AIRLOCK_EVENTS", "").Sessions(ctx, recorder.ListOptions{}); err != nil {
		t.Fatalf("list as the gateway user: %v", err)
	}
	// The session index, as the gateway keeps it, syncs by asking the
	// stream itself (STREAM.MSG.GET), without falling back to the
	// consumer's count alone as it does when refused.
	indexLog := &lockedBuffer{}
	x, _, err := indexAfterData(ctx, t, gw.JS, rec, "ses_perm_ssh", slog.New(slog.NewTextHandler(indexLog, nil)))
	if err != nil {
		t.Fatalf("session index synced as the gateway user: %v", err)
	}
	if strings.Contains(indexLog.String(), "cannot read single messages") {
		t.Fatalf("the session index could not read the events stream as the gateway user:\n%s", indexLog)
	}
	if p, err := x.Query(recorder.Query{Limit: 1}); err != nil || len(p.Sessions) != 1 || p.Sessions[0].Session != "ses_perm_ssh" {
		t.Fatalf("session index as the gateway user lists %+v (%v), want ses_perm_ssh first", p.Sessions, err)
	}
	// It follows the standby too, and syncs on it the same way: a
	// session start published there (as a failover would) is read back
	// as a single message.
	if rec.Standby() != "AIRLOCK_EVENTS_STANDBY" {
		t.Fatalf("the recorder's standby is %q", rec.Standby())
	}
	if _, err := gw.JS.Publish(ctx, "airlock.events_standby.ses_perm_sb.start", []byte(`{"type":"session.start","session":"ses_perm_sb","seq":1}`)); err != nil {
		t.Fatalf("publish to the standby as the gateway user: %v", err)
	}
	sb, err := gw.JS.Stream(ctx, "AIRLOCK_EVENTS_STANDBY")
	if err != nil {
		t.Fatalf("standby stream info as the gateway user: %v", err)
	}
	gctx, gcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = sb.GetMsg(gctx, 1, jetstream.WithGetMsgSubject("airlock.events_standby.*.start"))
	gcancel()
	if err != nil {
		t.Fatalf("single message of the standby as the gateway user (the session index's sync): %v", err)
	}
	store, err := control.OpenStore(ctx, gw.NC, gw.JS, control.StoreOptions{Bucket: "airlock_grants", Replicas: 3, Standby: true})
	if err != nil {
		t.Fatalf("grant store as the gateway user: %v", err)
	}
	// Both buckets written, and the revocation notice sent and received.
	revoked := make(chan struct{}, 1)
	store.OnChange(func(g *authz.Grant) {
		if g.State == authz.StateRevoked {
			select {
			case revoked <- struct{}{}:
			default:
			}
		}
	})
	if err := store.Create(ctx, &authz.Grant{ID: "gr_perm", Agent: "a", State: authz.StateActive}); err != nil {
		t.Fatalf("grant created as the gateway user: %v", err)
	}
	if _, err := store.Update(ctx, "gr_perm", func(g *authz.Grant) error { g.State, g.RevokedBy = authz.StateRevoked, "alice"; return nil }); err != nil {
		t.Fatalf("grant revoked as the gateway user: %v", err)
	}
	<-revoked
	store.Close()
	// Held statements: created, watched while waiting, listed, decided.
	hs, err := control.OpenHoldStore(ctx, gw.JS, control.HoldStoreOptions{Bucket: "airlock_holds", Replicas: 3})
	if err != nil {
		t.Fatalf("holds bucket as the gateway user: %v", err)
	}
	held := &authz.Hold{ID: control.NewHoldID(), Agent: "a", ExpiresAt: time.Now().Add(time.Minute)}
	heldDone := make(chan error, 1)
	go func() {
		h, err := hs.Wait(ctx, held)
		if err == nil && h.State != authz.HoldApproved {
			err = fmt.Errorf("hold ended %s", h.State)
		}
		heldDone <- err
	}()
	for {
		if l, err := hs.List(ctx, authz.HoldPending); err != nil {
			t.Fatalf("holds listed as the gateway user: %v", err)
		} else if len(l) == 1 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := hs.Decide(ctx, held.ID, true, "alice", ""); err != nil {
		t.Fatalf("hold approved as the gateway user: %v", err)
	}
	if err := <-heldDone; err != nil {
		t.Fatalf("hold waited for as the gateway user: %v", err)
	}
	// Web console sessions and sign-in links.
	cs, err := console.OpenStore(ctx, gw.JS, "airlock_console", 3, 12*time.Hour)
	if err != nil {
		t.Fatalf("console bucket as the gateway user: %v", err)
	}
	alice := &config.Identity{Name: "alice", Role: config.RoleApprover, TokenSHA256: strings.Repeat("ab", 32)}
	secret, _, err := cs.NewLink(ctx, alice)
	if err != nil {
		t.Fatalf("console link as the gateway user: %v", err)
	}
	if _, err := cs.UseLink(ctx, secret); err != nil {
		t.Fatalf("console link used as the gateway user: %v", err)
	}
	sid, err := cs.NewSession(ctx, alice)
	if err != nil {
		t.Fatalf("console session as the gateway user: %v", err)
	}
	if _, err := cs.Session(ctx, sid, time.Hour, 12*time.Hour); err != nil {
		t.Fatalf("console session read as the gateway user: %v", err)
	}
	if err := cs.EndSession(ctx, sid); err != nil {
		t.Fatalf("console sign-out as the gateway user: %v", err)
	}
	for _, name := range []string{"AIRLOCK_EVENTS_STANDBY", "KV_airlock_grants_standby"} {
		if _, err := gw.JS.Stream(ctx, name); err != nil {
			t.Fatalf("%s as the gateway user: %v", name, err)
		}
	}
	// Heartbeats, and noting a stopped gateway's session: a gateway
	// process that ran before this one on its data directory left
	// ses_gone open.
	prev := recorder.NewInstanceID()
	writer, err := recorder.New(ctx, gw.JS, recorder.Options{Stream: "AIRLOCK_EVENTS", Replicas: 3, Signer: rec.Signer(), Instance: prev})
	if err != nil {
		t.Fatal(err)
	}
	gone := writer.Open("ses_gone", recorder.Meta{Agent: "a", Resource: "r", Protocol: "postgres", Client: "c"})
	gone.Append(recorder.Event{Type: recorder.TypeSessionStart})
	if err := gone.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rd := recorder.NewReader(gw.JS, "AIRLOCK_EVENTS", "")
	openInst := func(rec *recorder.Recorder, id, previous string) *recorder.Instances {
		in, err := recorder.OpenInstances(ctx, gw.JS, recorder.InstanceOptions{
			Bucket: "airlock_instances", Replicas: 3, Timeout: time.Minute, Instance: id, Previous: previous,
			Recorder: rec, Reader: rd,
		})
		if err != nil {
			t.Fatalf("instances bucket as the gateway user: %v", err)
		}
		return in
	}
	openInst(writer, prev, "").Close(ctx, false)
	next := openInst(rec, recorder.NewInstanceID(), prev)
	next.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, err := rd.Events(ctx, "ses_gone")
		if err != nil {
			t.Fatal(err)
		}
		if s := recorder.Summarize(evs); s.Status == recorder.StatusInterrupted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stopped instance's session was not marked interrupted as the gateway user: %+v", evs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	next.Close(ctx, true)

	// The reviewer reads.
	var rv violations
	_, rjs := connectAs(t, c, u, "reviewer", &rv, nats.CustomInboxPrefix("_INBOX_reviewer"))
	evs, err := recorder.NewReader(rjs, "AIRLOCK_EVENTS", "").Events(ctx, "ses_perm")
	if err != nil || len(evs) != 2 {
		t.Fatalf("read as the reviewer: %d events, %v", len(evs), err)
	}

	var gv, av violations
	gnc, gjs := connectAs(t, c, u, "gateway", &gv)
	_, ajs := connectAs(t, c, u, "admin", &av)
	rnc, _ := connectAs(t, c, u, "reviewer", &rv, nats.CustomInboxPrefix("_INBOX_reviewer"))

	st, err := ajs.Stream(ctx, "AIRLOCK_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	weaker := st.CachedInfo().Config
	weaker.MaxAge = time.Hour

	type who struct {
		name string
		js   jetstream.JetStream
		v    *violations
	}
	gateway, reviewer, admin := who{"gateway", gjs, &gv}, who{"reviewer", rjs, &rv}, who{"admin", ajs, &av}
	cases := []struct {
		name    string
		who     who
		subject string // the refused subject the server names
		try     func(ctx context.Context, js jetstream.JetStream) error
	}{
		{"gateway deletes the stream", gateway, "$JS.API.STREAM.DELETE.AIRLOCK_EVENTS",
			func(ctx context.Context, js jetstream.JetStream) error { return js.DeleteStream(ctx, "AIRLOCK_EVENTS") }},
		{"gateway purges the stream", gateway, "$JS.API.STREAM.PURGE.AIRLOCK_EVENTS",
			func(ctx context.Context, js jetstream.JetStream) error { return jsPurge(ctx, js) }},
		{"gateway updates the stream", gateway, "$JS.API.STREAM.UPDATE.AIRLOCK_EVENTS",
			func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.UpdateStream(ctx, weaker)
				return err
			}},
		{"gateway deletes the standby", gateway, "$JS.API.STREAM.DELETE.AIRLOCK_EVENTS_STANDBY",
			func(ctx context.Context, js jetstream.JetStream) error {
				return js.DeleteStream(ctx, "AIRLOCK_EVENTS_STANDBY")
			}},
		{"gateway updates the standby", gateway, "$JS.API.STREAM.UPDATE.AIRLOCK_EVENTS_STANDBY",
			func(ctx context.Context, js jetstream.JetStream) error {
				return jsRaw(ctx, js, "$JS.API.STREAM.UPDATE.AIRLOCK_EVENTS_STANDBY")
			}},
		{"gateway moves the events stream's leader", gateway, "$JS.API.STREAM.LEADER.STEPDOWN.AIRLOCK_EVENTS",
			func(ctx context.Context, js jetstream.JetStream) error {
				return jsRaw(ctx, js, "$JS.API.STREAM.LEADER.STEPDOWN.AIRLOCK_EVENTS")
			}},
		{"gateway deletes an event", gateway, "$JS.API.STREAM.MSG.DELETE.AIRLOCK_EVENTS",
			func(ctx context.Context, js jetstream.JetStream) error { return jsDeleteMsg(ctx, js) }},
		{"gateway publishes outside its subjects", gateway, "other.subject",
			func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.Publish(ctx, "other.subject", []byte("x"))
				return err
			}},
		{"gateway creates another stream", gateway, "$JS.API.STREAM.CREATE.SHADOW",
			func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SHADOW", Subjects: []string{"shadow.>"}})
				return err
			}},
		{"reviewer publishes an event", reviewer, "airlock.events.ses_forged.start",
			func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.Publish(ctx, "airlock.events.ses_forged.start", []byte(`{"v":2}`))
				return err
			}},
		{"reviewer deletes the stream", reviewer, "$JS.API.STREAM.DELETE.AIRLOCK_EVENTS",
			func(ctx context.Context, js jetstream.JetStream) error { return js.DeleteStream(ctx, "AIRLOCK_EVENTS") }},
		{"reviewer purges the stream", reviewer, "$JS.API.STREAM.PURGE.AIRLOCK_EVENTS",
			func(ctx context.Context, js jetstream.JetStream) error { return jsPurge(ctx, js) }},
		{"reviewer updates the stream", reviewer, "$JS.API.STREAM.UPDATE.AIRLOCK_EVENTS",
			func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.UpdateStream(ctx, weaker)
				return err
			}},
		{"reviewer deletes an event", reviewer, "$JS.API.STREAM.MSG.DELETE.AIRLOCK_EVENTS",
			func(ctx context.Context, js jetstream.JetStream) error { return jsDeleteMsg(ctx, js) }},
		{"admin deletes the stream", admin, "$JS.API.STREAM.DELETE.AIRLOCK_EVENTS",
			func(ctx context.Context, js jetstream.JetStream) error { return js.DeleteStream(ctx, "AIRLOCK_EVENTS") }},
		{"admin purges the stream", admin, "$JS.API.STREAM.PURGE.AIRLOCK_EVENTS",
			func(ctx context.Context, js jetstream.JetStream) error { return jsPurge(ctx, js) }},
		{"admin deletes the standby", admin, "$JS.API.STREAM.DELETE.AIRLOCK_EVENTS_STANDBY",
			func(ctx context.Context, js jetstream.JetStream) error {
				return js.DeleteStream(ctx, "AIRLOCK_EVENTS_STANDBY")
			}},
		{"reviewer publishes to the standby", reviewer, "airlock.events_standby.ses_forged.start",
			func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.Publish(ctx, "airlock.events_standby.ses_forged.start", []byte(`{"v":2}`))
				return err
			}},
		{"admin publishes an event", admin, "airlock.events.ses_forged.start",
			func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.Publish(ctx, "airlock.events.ses_forged.start", []byte(`{"v":2}`))
				return err
			}},
	}
	// The subtests run in parallel: each refused request waits out its
	// timeout. The group returns when all have.
	t.Run("refusals", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				// A refused request gets no answer, only the violation: the
				// call fails when its context ends.
				tctx, tcancel := context.WithTimeout(ctx, 2*time.Second)
				defer tcancel()
				if err := tc.try(tctx, tc.who.js); err == nil {
					t.Fatalf("%s: allowed", tc.name)
				}
				tc.who.v.wait(t, tc.subject)
			})
		}
	})

	// The stream the operator cannot break either: deny_delete and
	// deny_purge cannot be turned off by an update.
	loosened := st.CachedInfo().Config
	loosened.DenyDelete, loosened.DenyPurge = false, false
	if _, err := ajs.UpdateStream(ctx, loosened); err == nil {
		t.Error("admin turned deny_delete and deny_purge off")
	}

	// A reviewer cannot listen to the gateway's replies, which carry grants.
	if _, err := rnc.SubscribeSync("_INBOX.>"); err == nil {
		rv.wait(t, "_INBOX.>")
	}
	// Nor can the gateway subscribe to the events directly (it reads
	// through consumers only).
	if _, err := gnc.SubscribeSync("airlock.events.>"); err == nil {
		gv.wait(t, "airlock.events.>")
	}

	// After all of it the stream still holds exactly the sessions' events
	// (ses_perm's two, ses_gone's start and its note, ses_perm_ssh's
	// start, data and the checkpoint that signs them once it is due, and
	// ses_perm_sb's start once the stream has sourced it from the standby).
	count := func(session string) uint64 {
		t.Helper()
		in, err := st.Info(ctx, jetstream.WithSubjectFilter("airlock.events."+session+".>"))
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, m := range in.State.Subjects {
			n += m
		}
		return n
	}
	sshMsgs, sbMsgs := count("ses_perm_ssh"), count("ses_perm_sb")
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sshMsgs < 2 || sbMsgs > 1 || info.State.Msgs != 4+sshMsgs+sbMsgs || info.Config.MaxAge != 0 || !info.Config.DenyDelete || !info.Config.DenyPurge {
		t.Fatalf("stream after the attempts: %d messages (%d of ses_perm_ssh, %d of ses_perm_sb), config %+v", info.State.Msgs, sshMsgs, sbMsgs, info.Config)
	}
}

func jsPurge(ctx context.Context, js jetstream.JetStream) error {
	st, err := js.Stream(ctx, "AIRLOCK_EVENTS")
	if err != nil {
		// Not even allowed to look: also a refusal, but the purge itself
		// must be tried to prove it is refused.
		return jsRaw(ctx, js, "$JS.API.STREAM.PURGE.AIRLOCK_EVENTS")
	}
	return st.Purge(ctx)
}

func jsDeleteMsg(ctx context.Context, js jetstream.JetStream) error {
	st, err := js.Stream(ctx, "AIRLOCK_EVENTS")
	if err != nil {
		return jsRaw(ctx, js, "$JS.API.STREAM.MSG.DELETE.AIRLOCK_EVENTS")
	}
	return st.DeleteMsg(ctx, 1)
}

// jsRaw sends an API request directly.
func jsRaw(ctx context.Context, js jetstream.JetStream, subject string) error {
	msg, err := js.Conn().RequestWithContext(ctx, subject, []byte(`{"seq":1}`))
	if err != nil {
		return err
	}
	if strings.Contains(string(msg.Data), `"error"`) {
		return errors.New(string(msg.Data))
	}
	return nil
}

// gatewayRecorder connects to url as name with the nkey seed in creds,
// as the gateway connects (natsconn, the seed as
// recorder.credentials_file), and starts a recorder on the events stream
// with 3 replicas, a fresh signer and opts' other settings; both end
// with the test.
func gatewayRecorder(ctx context.Context, t *testing.T, url, creds, name string, opts recorder.Options) (*natsconn.Conn, *recorder.Recorder) {
	t.Helper()
	nc, err := natsconn.Connect(ctx, natsconn.Options{URL: url, CredentialsFile: creds, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if opts.Signer, err = recorder.GenerateSigner(); err != nil {
		t.Fatal(err)
	}
	opts.Stream, opts.Replicas = "AIRLOCK_EVENTS", 3
	rec, err := recorder.New(ctx, nc.JS, opts)
	if err != nil {
		t.Fatalf("recorder as %s: %v", name, err)
	}
	t.Cleanup(rec.Close)
	return nc, rec
}

// indexAfterData runs a session index on js as the gateway keeps one
// (stopped when the test ends), then records through rec session id's
// start and a chunk of its data: the data, which the index does not
// follow, is the stream's last message, so the index's Sync must ask the
// stream whether a followed message is left (STREAM.MSG.GET). It returns
// the index, how long its Sync took and what it returned.
func indexAfterData(ctx context.Context, t *testing.T, js jetstream.JetStream, rec *recorder.Recorder, id string, log *slog.Logger) (*recorder.Index, time.Duration, error) {
	t.Helper()
	x := recorder.NewIndex(js, recorder.IndexOptions{Stream: "AIRLOCK_EVENTS", Standby: rec.Standby(), Logger: log})
	xctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = x.Run(xctx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	if err := x.Wait(ctx); err != nil {
		t.Fatalf("session index: %v", err)
	}
	l := rec.Open(id, recorder.Meta{Agent: "agent-1", Resource: "demo-ssh", Protocol: "ssh", Client: "c"})
	l.Append(recorder.Event{Type: recorder.TypeSessionStart})
	l.Append(recorder.Event{Type: recorder.TypeData, Data: &recorder.Data{ID: 1, Stream: "stdout", Text: "ok"}})
	if err := l.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := x.Sync(sctx)
	return x, time.Since(began), err
}
