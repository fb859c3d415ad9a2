package plural

import "testing"

func TestN(t *testing.T) {
	for _, c := range []struct {
		n    int
		want string
	}{{0, "0 events"}, {1, "1 event"}, {2, "2 events"}, {-1, "-1 events"}} {
		if got := N(c.n, "event"); got != c.want {
			t.Errorf("N(%d) = %q, want %q", c.n, got, c.want)
		}
	}
	if got := Of(uint64(1), "entry", "entries"); got != "1 entry" {
		t.Errorf("Of(1) = %q", got)
	}
	if got := Of(int64(3), "entry", "entries"); got != "3 entries" {
		t.Errorf("Of(3) = %q", got)
	}
}
