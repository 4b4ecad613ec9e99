package redistest

import "syscall"

// sysProcAttr makes the kernel kill the server when the test binary dies
// without running its cleanups (a panic in another goroutine, a test
// timeout), so no orphaned redis-server outlives the test run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
