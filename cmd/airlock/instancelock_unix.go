//go:build unix

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// instanceFile is the file in data_dir that holds the running gateway's
// instance id, locked while it runs.
const instanceFile = "instance"

// lockInstance takes data_dir's instance lock for the process's life and
// records id in it. It returns the id recorded by the gateway that ran on
// this data directory before: that process has stopped (its lock is
// free), so its open sessions can be marked interrupted at once. A lock
// held by a running gateway is an error: two gateways must not share a
// data directory (keys, certificates, the embedded store).
func lockInstance(dataDir, id string) (previous string, release func(), err error) {
	path := filepath.Join(dataDir, instanceFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("data_dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return "", nil, fmt.Errorf("data_dir %s is in use by another running gateway (%s is locked); give each gateway its own data_dir", dataDir, path)
		}
		return "", nil, fmt.Errorf("data_dir: lock %s: %w", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		f.Close()
		return "", nil, fmt.Errorf("data_dir: %w", err)
	}
	previous = string(bytes.TrimSpace(b))
	if err := f.Truncate(0); err != nil {
		f.Close()
		return "", nil, fmt.Errorf("data_dir: %w", err)
	}
	if _, err := f.WriteAt([]byte(id+"\n"), 0); err != nil {
		f.Close()
		return "", nil, fmt.Errorf("data_dir: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", nil, fmt.Errorf("data_dir: %w", err)
	}
	// Closing the file drops the lock; the kernel drops it too when the
	// process dies, however it dies.
	return previous, func() { f.Close() }, nil
}
