package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(`{"status":"ok"}`))
		case "/slow":
			<-r.Context().Done()
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"status":"unavailable","error":"JetStream has not established contact with a meta leader"}`))
		}
	}))
	defer srv.Close()

	for _, tc := range []struct {
		path    string
		timeout time.Duration
		body    string // printed on success
		err     string // in the error otherwise
	}{
		{path: "/ok", timeout: time.Second, body: `{"status":"ok"}`},
		{path: "/unhealthy", timeout: time.Second, err: "503 Service Unavailable: {\"status\":\"unavailable\",\"error\":\"JetStream has not established contact with a meta leader\"}"},
		{path: "/slow", timeout: 100 * time.Millisecond, err: "context deadline exceeded"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			var out strings.Builder
			err := probe(ctx, srv.Client(), srv.URL+tc.path, &out)
			if tc.err == "" {
				if err != nil || out.String() != tc.body {
					t.Fatalf("probe = %v, body %q; want nil, %q", err, out.String(), tc.body)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("probe = %v; want an error with %q", err, tc.err)
			}
			if out.Len() != 0 {
				t.Fatalf("a failed probe printed %q", out.String())
			}
		})
	}

	// Nothing listening.
	l := httptest.NewServer(http.NotFoundHandler())
	url := l.URL
	l.Close()
	if err := probe(context.Background(), http.DefaultClient, url, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("probe of a closed port = %v; want connection refused", err)
	}
}
