package authz

import (
	"reflect"
	"testing"
	"unsafe"
)

// TestDecisionCacheKeepsCopies: a caller may look up and put with texts
// that are views of its read buffer (see Session.Query in authz/postgres);
// what the cache keeps are copies, so a buffer overwritten afterwards
// changes neither its keys nor its verdicts.
func TestDecisionCacheKeepsCopies(t *testing.T) {
	c := NewDecisionCache(8)
	g := &Grant{ID: "gr_1", Access: AccessRead, State: StateActive}
	buf := []byte("select 1")
	view := unsafe.String(unsafe.SliceData(buf), len(buf))
	k := CacheKey{Settings: "postgres|public", Text: view}
	v := Verdict{Allow: true, Statements: []Decision{{Text: view, Allow: true, Rule: "read"}}}
	c.Put(k, g, v)
	copy(buf, "delete 1")

	want := Verdict{Allow: true, Statements: []Decision{{Text: "select 1", Allow: true, Rule: "read"}}}
	got, ok := c.Get(CacheKey{Settings: "postgres|public", Text: "select 1"}, g, nil)
	if !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("after the caller's buffer changed: %+v, %v; want %+v", got, ok, want)
	}
	if _, ok := c.Get(CacheKey{Settings: "postgres|public", Text: "delete 1"}, g, nil); ok {
		t.Error("the buffer's new text found the verdict kept for its old one")
	}
	// Into a caller's slice: the same verdict, in the caller's memory.
	dst := make([]Decision, 0, 4)
	got, _ = c.Get(CacheKey{Settings: "postgres|public", Text: "select 1"}, g, dst)
	if !reflect.DeepEqual(got, want) || unsafe.SliceData(got.Statements) != unsafe.SliceData(dst) {
		t.Errorf("into dst: %+v, want %+v in dst's memory", got, want)
	}
}
