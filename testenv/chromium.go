package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Browser is a headless Chromium tab driven by chromedp. It is a chromedp
// context: pass it to chromedp.Run. It records what the page reported as
// an error (uncaught exceptions, console.error, CSP violations and other
// log entries of level error) and every JavaScript dialog, which it
// dismisses so the page does not hang; the test fails at its end if there
// were any, unless Allow says the message is expected.
type Browser struct {
	context.Context
	t testing.TB

	mu      sync.Mutex
	errors  []string
	dialogs []string
	allow   []string
}

// browserStart bounds Chromium's start, apart from the test's own
// deadlines: a cold start on a busy machine takes seconds.
const browserStart = 60 * time.Second

// Chromium starts headless Chromium (installing the Debian package
// chromium when missing) with a fresh profile in a temporary directory,
// and returns a tab. Everything is closed when the test ends.
func Chromium(t testing.TB) *Browser {
	t.Helper()
	bin := RequireBinary(t, "chromium", "chromium")
	// As root on this machine Chromium needs --no-sandbox; with the
	// network closed, anything reaching out (updates, sync, QUIC probes)
	// stalls it, so all of that is off.
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.WindowSize(1280, 900),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &Browser{t: t}
	// The listener is there before the tab's first command, so it sees
	// every event (chromedp enables the runtime and log domains).
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(func(string, ...any) {}), chromedp.WithListener(b.onEvent))
	b.Context = ctx
	// The first Do starts the browser and binds it to ctx, so it must not
	// get the start-up deadline's context; a timer cancels it instead.
	timer := time.AfterFunc(browserStart, cancel)
	err := chromedp.Do(ctx)
	stopped := !timer.Stop()
	if err != nil || stopped {
		cancel()
		acancel()
		t.Fatalf("testenv: starting chromium (%s): %v", bin, err)
	}
	t.Cleanup(func() {
		cancel()
		acancel()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.errors {
			t.Errorf("browser reported an error: %s", e)
		}
		for _, d := range b.dialogs {
			t.Errorf("browser opened a dialog: %s", d)
		}
	})
	return b
}

// Allow marks browser errors containing substr as expected.
func (b *Browser) Allow(substr string) {
	b.mu.Lock()
	b.allow = append(b.allow, substr)
	b.mu.Unlock()
}

// Dialogs returns the JavaScript dialogs opened so far and forgets them,
// so a test that expects one does not fail at its end.
func (b *Browser) Dialogs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.dialogs
	b.dialogs = nil
	return d
}

func (b *Browser) onEvent(ev any) {
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg := e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil && e.ExceptionDetails.Exception.Description != "" {
			msg += ": " + e.ExceptionDetails.Exception.Description
		}
		b.report(fmt.Sprintf("uncaught exception at %s:%d: %s", e.ExceptionDetails.URL, e.ExceptionDetails.LineNumber, msg))
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range e.Args {
				if a.Value != nil {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			b.report("console." + string(e.Type) + ": " + strings.Join(parts, " "))
		}
	case *cdplog.EventEntryAdded:
		if e.Entry.Level == cdplog.EntryLevelError {
			b.report(fmt.Sprintf("%s: %s (%s)", e.Entry.Source, e.Entry.Text, e.Entry.URL))
		}
	case *page.EventJavascriptDialogOpening:
		b.mu.Lock()
		b.dialogs = append(b.dialogs, string(e.Type)+": "+e.Message)
		b.mu.Unlock()
		// The listener runs in the tab's loop and may run no command:
		// dismiss from a goroutine.
		go func() {
			_, _ = chromedp.Call(b.Context, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}()
	}
}

func (b *Browser) report(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, a := range b.allow {
		if strings.Contains(msg, a) {
			return
		}
	}
	b.errors = append(b.errors, msg)
}

// Screenshot saves the whole page as a PNG at path (for docs), creating
// its directory.
func Screenshot(t testing.TB, ctx context.Context, path string) {
	t.Helper()
	// Quality 100 makes chromedp ask for PNG.
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
}
