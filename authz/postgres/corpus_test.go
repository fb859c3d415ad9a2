package postgres

import (
	"testing"

	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// TestCorpus decides every case of testdata/corpus/postgres.tsv; the
// format is in authztest.
func TestCorpus(t *testing.T) {
	pg := authztest.ReadCorpus(t, "postgres.tsv")
	t.Logf("corpus: %d postgres cases", len(pg))
	if len(pg) < 250 {
		t.Errorf("corpus too small: %d postgres cases", len(pg))
	}
	t.Run("postgres", func(t *testing.T) {
		for _, c := range pg {
			g := authztest.CorpusGrant(t, c.Grant, nil)
			authztest.CheckCase(t, c, NewSession(Options{}).Query(g, c.SQL))
		}
	})
}
