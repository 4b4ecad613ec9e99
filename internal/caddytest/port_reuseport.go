//go:build linux || darwin

package caddytest

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reservePort picks a free loopback port and keeps it reserved until
// release: a socket bound to it with SO_REUSEADDR and SO_REUSEPORT, that
// never listens. The kernel hands a bound port to no one asking for a free
// port (bind to port 0, outgoing connections), while Caddy, whose listeners
// set SO_REUSEPORT, can still bind it, again and again; and a socket that
// does not listen receives no connections.
//
// A port picked by listening on port 0 and closing is only free until
// someone else takes it; and two Caddy processes given the same port would
// both bind it, thanks to SO_REUSEPORT, and share its connections.
func reservePort() (port int, release func(), err error) {
	syscall.ForkLock.RLock() // no child may inherit the socket
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return 0, nil, err
	}
	fail := func(err error) (int, func(), error) {
		unix.Close(fd)
		return 0, nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fail(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fail(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail(err)
	}
	return sa.(*unix.SockaddrInet4).Port, func() { unix.Close(fd) }, nil
}
