package ssh

import (
	"context"
	"errors"

	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/proxy"
)

// Interrupt implements proxy.Relay. A running command is sent a signal
// request, as `kill` would (sshd signals the command's process group):
// SIGTERM first, after the agent is told why on its stderr (the command's
// exit closes the channel, and the agent would not be told later); then
// SIGKILL, and the target's channel is closed. An SFTP subsystem is
// closed at once: sftp-server ends on its channel's close and its open
// handles with it, and there is no statement inside it to wait for.
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
	if len(cmds)+len(sftps) == 0 {
		return "", nil
	}
	method, signal := "signal", "TERM"
	if step == proxy.StopTerminate || len(cmds) == 0 {
		method, signal = "close", "KILL"
	}
	return method, func(ctx context.Context) error {
		if step == proxy.StopCancel {
			c.tellAll("airlock: session ended: " + proxy.EndMessage(context.Cause(c.sess.Context())))
		}
		var errs []error
		for _, s := range cmds {
			// No reply asked: sshd refuses a signal it may not send
			// (a forced command) only in its log, and the grace tells.
			if _, err := s.up.SendRequest("signal", false, ssh.Marshal(signalMsg{Signal: signal})); err != nil {
				errs = append(errs, err)
			}
			if method == "close" {
				_ = s.up.Close()
			}
		}
		for _, s := range sftps {
			_ = s.up.Close()
		}
		return errors.Join(errs...)
	}
}
