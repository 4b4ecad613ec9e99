//go:build linux || darwin

package caddytest

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A reserved port must take Caddy's listeners, which set SO_REUSEPORT,
// again and again (a restart comes back on the same port), and the
// connections must reach them rather than the reserving socket.
func TestFreePortTakesReusePortListeners(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	for i := range 2 {
		l, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatalf("listen %d on the reserved %s: %v", i, addr, err)
		}
		accepted := make(chan error, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				c.Close()
			}
			accepted <- err
		}()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		c.Close()
		if err := <-accepted; err != nil {
			t.Fatalf("accept %d: %v", i, err)
		}
		l.Close()
	}
}

// While a port is reserved, the kernel hands it to no one asking for a
// free port.
func TestFreePortIsNotHandedOut(t *testing.T) {
	reserved := map[int]bool{}
	for range 20 {
		reserved[FreePort(t)] = true
	}
	if len(reserved) != 20 {
		t.Fatalf("20 reservations gave %d distinct ports", len(reserved))
	}
	for range 200 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if reserved[port] {
			t.Fatalf("listening on port 0 got the reserved port %d", port)
		}
	}
}
