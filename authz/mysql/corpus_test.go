package mysql

import (
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// corpusGrant builds the grant and the options a case names: MySQL
// cases may add db=NAME (current database; default app), dbs=A|B (the
// resource's databases; default app|reporting), mode=SQL_MODE and
// server=VERSION.
func corpusGrant(t testing.TB, spec string) (*authz.Grant, Options) {
	t.Helper()
	o := Options{Database: "app", Databases: []string{"app", "reporting"}}
	g := authztest.CorpusGrant(t, spec, func(k, v string) bool {
		switch k {
		case "db":
			o.Database = v
		case "dbs":
			o.Databases = strings.Split(v, "|")
		case "mode":
			o.SQLMode = v
		case "server":
			o.ServerVersion = v
		default:
			return false
		}
		return true
	})
	return g, o
}

// TestCorpus decides every case of testdata/corpus/mysql.tsv; the format
// is in authztest.
func TestCorpus(t *testing.T) {
	my := authztest.ReadCorpus(t, "mysql.tsv")
	t.Logf("corpus: %d mysql cases", len(my))
	if len(my) < 150 {
		t.Errorf("corpus too small: %d mysql cases", len(my))
	}
	t.Run("mysql", func(t *testing.T) {
		for _, c := range my {
			g, o := corpusGrant(t, c.Grant)
			authztest.CheckCase(t, c, NewSession(o).Query(g, c.SQL))
		}
	})
}
