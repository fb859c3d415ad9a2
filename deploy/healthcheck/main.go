// Command healthcheck is the probe the images of docker-compose.yml run as
// their health check: it GETs a URL and exits 0 if the answer is 2xx, 1
// otherwise, with the status and the start of the body on stderr (Docker
// keeps that output in the container's health log, so
// `docker inspect --format '{{json .State.Health}}'` says why a container
// is unhealthy). With -print it writes the body to stdout.
//
// It is a static binary of a few MB, so the images need neither curl nor
// wget, and it is not part of the airlock CLI.
//
//	healthcheck http://127.0.0.1:8080/healthz
//	healthcheck -print 'http://127.0.0.1:8222/jsz?streams=true'
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	timeout := flag.Duration("timeout", 5*time.Second, "give up after this long")
	printBody := flag.Bool("print", false, "write the body of a 2xx answer to stdout")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: healthcheck [-timeout D] [-print] URL")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var out io.Writer = io.Discard
	if *printBody {
		out = os.Stdout
	}
	if err := probe(ctx, http.DefaultClient, flag.Arg(0), out); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

// maxBody caps what is read of an answer: health and monitoring answers
// are small, and a probe must not hold a container's memory.
const maxBody = 16 << 20

// probe GETs url and copies a 2xx answer's body to out. Any other status is
// an error that carries the status and the start of the body.
func probe(ctx context.Context, c *http.Client, url string, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxBody)
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	if _, err := io.Copy(out, body); err != nil {
		return fmt.Errorf("GET %s: reading the answer: %w", url, err)
	}
	return nil
}
