package authz

import (
	"slices"
	"strings"
	"sync"
)

// DecisionCache keeps recent verdicts on whole messages, keyed by the
// grant, the session settings that change a decision, and one of:
//
//   - the exact text of the message;
//   - its masked key (CacheKey.Masked), the text with each constant (a
//     string, bit string or number) replaced by a placeholder of its
//     kind, so that SELECT ... WHERE aid = 1 and ... WHERE aid = 2 share
//     one. Only a verdict that read no constant's value is kept under it:
//     the dialect marks each statement whose decision read one
//     (set_config('role', ...) and set_config('application_name', ...)
//     share a masked key, and their decisions read the setting's name),
//     and keeps such a verdict under the exact text only. A verdict kept
//     under a masked key holds no statement text; a hit carries where
//     each statement's text lies in the key (TextSpan), and the caller
//     cuts it from its own message, so that a hit is deep-equal to the
//     verdict the message itself gets.
//
// A hit is checked against every field of the grant a decision reads (ID,
// resource, task, access, state, scope), so an updated grant never gets
// a verdict made for its older version. Messages whose verdict depends on
// session state (PREPARE, EXECUTE, USE, HANDLER, ...) are not cached.
//
// It is bounded (least recently used entries go first) and safe for
// concurrent use; one cache serves every session of a gateway.
type DecisionCache struct {
	mu         sync.Mutex
	max        int
	m          map[cacheKey]*cacheEntry
	head, tail *cacheEntry // head is the most recently used
	hits, miss uint64
}

// MaxCachedText is the longest message the cache keeps: long messages
// are rarely repeated and would crowd the cache's memory.
const MaxCachedText = 16 << 10

// CacheKey is what a dialect's session keys a verdict by; the cache adds
// the grant's ID.
type CacheKey struct {
	// Settings names the dialect and the session settings the decision
	// read (default schema, current databases, sql_mode, server version).
	Settings string
	// Text is the message as the client sent it.
	Text string
	// Masked is the message's masked key, when the dialect made one (see
	// DecisionCache); GetMasked and PutMasked use it.
	Masked string
	// Prepare is set for a message that prepares a statement (Parse,
	// COM_STMT_PREPARE) rather than runs it.
	Prepare bool
}

// TextSpan is where one statement's text lies in a masked key: bytes
// [Start, End), neither inside a placeholder.
type TextSpan struct{ Start, End int }

type cacheKey struct {
	settings, text  string
	prepare, masked bool
	grant           string
}

func exactKey(k CacheKey, g *Grant) cacheKey {
	return cacheKey{settings: k.Settings, text: k.Text, prepare: k.Prepare, grant: grantID(g)}
}

func maskedKey(k CacheKey, g *Grant) cacheKey {
	return cacheKey{settings: k.Settings, text: k.Masked, prepare: k.Prepare, masked: true, grant: grantID(g)}
}

type cacheEntry struct {
	key cacheKey
	g   grantSnap
	v   Verdict
	// at is where each statement's text lies in a masked key.
	at         []TextSpan
	prev, next *cacheEntry
}

// grantSnap is the part of a grant a decision reads.
type grantSnap struct {
	id, resource, task string
	access             Access
	state              State
	scope              Scope
}

func snapGrant(g *Grant) grantSnap {
	if g == nil {
		return grantSnap{access: -1}
	}
	sc := g.Scope
	sc.Tables = slices.Clone(sc.Tables)
	sc.Functions = slices.Clone(sc.Functions)
	return grantSnap{id: g.ID, resource: g.Resource, task: g.Task, access: g.Access, state: g.State, scope: sc}
}

func (s *grantSnap) matches(g *Grant) bool {
	if g == nil {
		return s.access == -1
	}
	return s.id == g.ID && s.resource == g.Resource && s.task == g.Task && s.access == g.Access &&
		s.state == g.State && s.scope.AllowDrop == g.Scope.AllowDrop &&
		s.scope.AllowUnfiltered == g.Scope.AllowUnfiltered && s.scope.MaxTables == g.Scope.MaxTables &&
		s.scope.AllowFileLoad == g.Scope.AllowFileLoad && s.scope.AllowServerFiles == g.Scope.AllowServerFiles &&
		slices.Equal(s.scope.Tables, g.Scope.Tables) && slices.Equal(s.scope.Functions, g.Scope.Functions)
}

// NewDecisionCache makes a cache of at most size verdicts (4096 when size
// is not positive).
func NewDecisionCache(size int) *DecisionCache {
	if size <= 0 {
		size = 4096
	}
	return &DecisionCache{max: size, m: make(map[cacheKey]*cacheEntry, size)}
}

// Stats returns the number of hits and misses so far.
func (c *DecisionCache) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.miss
}

// Len is the number of verdicts held.
func (c *DecisionCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

func grantID(g *Grant) string {
	if g == nil {
		return ""
	}
	return g.ID
}

// Get returns a copy of the verdict cached for k's exact text under g,
// its statements appended to dst[:0] (nil for a slice of their own). k's
// texts may be views of the caller's buffers: a lookup keeps none of
// them.
func (c *DecisionCache) Get(k CacheKey, g *Grant, dst []Decision) (Verdict, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookup(exactKey(k, g), g)
	if e == nil {
		c.miss++
		return Verdict{}, false
	}
	c.hits++
	c.moveFront(e)
	return e.copy(dst), true
}

// GetMasked returns a copy of the verdict cached for k.Masked under g,
// or else for k.Text. at is nil for a verdict cached under the exact
// text. For one cached under the masked key, its statements have no Text
// and at says where to cut each from the message: k.Masked[at[i].Start:
// at[i].End] with the message's own constants in place of the
// placeholders. The caller must not change at. dst is as for Get.
func (c *DecisionCache) GetMasked(k CacheKey, g *Grant, dst []Decision) (v Verdict, at []TextSpan, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookup(maskedKey(k, g), g)
	if e == nil {
		e = c.lookup(exactKey(k, g), g)
	}
	if e == nil {
		c.miss++
		return Verdict{}, nil, false
	}
	c.hits++
	c.moveFront(e)
	return e.copy(dst), e.at, true
}

// Put keeps v as the verdict for k's exact text under g, unless the
// message is too long to be worth keeping. It keeps copies of k's and
// v's texts, which may be views of the caller's buffers.
func (c *DecisionCache) Put(k CacheKey, g *Grant, v Verdict) {
	if len(k.Text) > MaxCachedText {
		return
	}
	v.Statements = slices.Clone(v.Statements)
	for i := range v.Statements {
		v.Statements[i].Text = strings.Clone(v.Statements[i].Text)
	}
	c.put(exactKey(k, g), g, v, nil)
}

// PutMasked keeps v as the verdict for every message of the masked key
// k.Masked under g: the caller has checked that no decision of v read a
// constant's value. at is where each statement's text lies in the key;
// the texts themselves are not kept.
func (c *DecisionCache) PutMasked(k CacheKey, g *Grant, v Verdict, at []TextSpan) {
	if len(k.Text) > MaxCachedText || k.Masked == "" || len(at) != len(v.Statements) {
		return
	}
	v.Statements = slices.Clone(v.Statements)
	for i := range v.Statements {
		v.Statements[i].Text = ""
	}
	c.put(maskedKey(k, g), g, v, slices.Clone(at))
}

// lookup finds the entry for key made under g as it is now.
func (c *DecisionCache) lookup(key cacheKey, g *Grant) *cacheEntry {
	e := c.m[key]
	if e == nil || !e.g.matches(g) {
		return nil
	}
	return e
}

// copy is the entry's verdict, its statements appended to dst[:0], for a
// caller that may change them; the cached one stays as made.
func (e *cacheEntry) copy(dst []Decision) Verdict {
	if dst == nil || len(e.v.Statements) == 0 {
		return Verdict{Allow: e.v.Allow, Statements: slices.Clone(e.v.Statements)}
	}
	return Verdict{Allow: e.v.Allow, Statements: append(dst[:0], e.v.Statements...)}
}

// put keeps v under key, with a copy of key's text (a view of the
// caller's buffer, perhaps).
func (c *DecisionCache) put(key cacheKey, g *Grant, v Verdict, at []TextSpan) {
	key.text = strings.Clone(key.text)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[key]; e != nil {
		e.g, e.v, e.at = snapGrant(g), v, at
		c.moveFront(e)
		return
	}
	e := &cacheEntry{key: key, g: snapGrant(g), v: v, at: at}
	c.m[key] = e
	c.pushFront(e)
	for len(c.m) > c.max {
		old := c.tail
		c.unlink(old)
		delete(c.m, old.key)
	}
}

func (c *DecisionCache) pushFront(e *cacheEntry) {
	e.prev, e.next = nil, c.head
	if c.head != nil {
		c.head.prev = e
	}
	c.head = e
	if c.tail == nil {
		c.tail = e
	}
}

func (c *DecisionCache) unlink(e *cacheEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (c *DecisionCache) moveFront(e *cacheEntry) {
	if c.head == e {
		return
	}
	c.unlink(e)
	c.pushFront(e)
}
