package ssh

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/proxy"
)

// killSiblings runs on the target, on a channel of the session's own
// connection, when a signal did not stop its commands: sshd starts every
// channel's command as a child of the connection's sshd process, each in
// a process group of its own, so the other children of this command's
// parent are exactly the commands this connection runs. Each group is
// killed, never this command's own.
const killSiblings = `for p in $(pgrep -P "$PPID"); do [ "$p" = "$$" ] || kill -s KILL -- "-$p" 2>/dev/null || kill -s KILL "$p" 2>/dev/null; done; exit 0`

// Interrupt implements proxy.Relay. A running command is first sent a
// signal request for SIGTERM, as `kill` would (sshd signals the command's
// process group), after the agent is told why on its stderr: the
// command's exit closes the channel, and the agent would not be told
// later. sshd refuses signal requests on a root login, a forced command
// or a subsystem, so the next step kills the commands' process groups
// from a channel of the same connection (killSiblings) and closes their
// channels. An SFTP subsystem is closed at once: sftp-server ends on its
// channel's close and its open handles with it.
func (c *conn) Interrupt(step proxy.StopStep) (string, func(context.Context) error) {
	var cmds, sftps []*sessionChan
	c.mu.Lock()
	for s := range c.channels {
		switch {
		case !s.running.Load() || s.up == nil:
		case s.sftp:
			sftps = append(sftps, s)
		default:
			cmds = append(cmds, s)
		}
	}
	c.mu.Unlock()
	closeSFTP := func() {
		for _, s := range sftps {
			_ = s.up.Close()
		}
	}
	switch {
	case len(cmds) == 0 && len(sftps) == 0:
		return "", nil
	case len(cmds) == 0:
		return "close", func(context.Context) error { closeSFTP(); return nil }
	case step == proxy.StopCancel:
		return "signal", func(ctx context.Context) error {
			c.tellAll("airlock: session ended: " + proxy.EndMessage(context.Cause(c.sess.Context())))
			closeSFTP()
			var errs []error
			for _, s := range cmds {
				errs = append(errs, within(ctx, func() error {
					ok, err := s.up.SendRequest("signal", true, ssh.Marshal(signalMsg{Signal: "TERM"}))
					if err == nil && !ok {
						err = errors.New("the target refused the signal request (sshd does on a root login or a forced command)")
					}
					return err
				}))
			}
			return errors.Join(errs...)
		}
	}
	return "kill", func(ctx context.Context) error {
		err := within(ctx, c.killCommands)
		for _, s := range cmds {
			_ = s.up.Close()
		}
		return err
	}
}

// killCommands runs killSiblings on the target.
func (c *conn) killCommands() error {
	ch, reqs, err := c.up.conn.OpenChannel("session", nil)
	if err != nil {
		return err
	}
	defer ch.Close()
	status := make(chan int, 1)
	go func() {
		for r := range reqs {
			var m exitStatusMsg
			if r.Type == "exit-status" && ssh.Unmarshal(r.Payload, &m) == nil {
				status <- int(m.Status)
			}
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
		close(status)
	}()
	ok, err := ch.SendRequest("exec", true, ssh.Marshal(execMsg{Command: killSiblings}))
	if err == nil && !ok {
		err = errors.New("the target refused to run kill")
	}
	if err != nil {
		return err
	}
	_ = ch.CloseWrite()
	if st, ok := <-status; ok && st != 0 {
		return fmt.Errorf("kill on the target exited %d", st)
	}
	return nil
}

// within runs f and returns its error, or ctx's once ctx ends first (f
// then finishes on its own).
func within(ctx context.Context, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
