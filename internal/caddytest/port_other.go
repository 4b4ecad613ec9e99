//go:build !(linux || darwin)

package caddytest

import "net"

// reservePort picks a free loopback port. Here it cannot stay reserved:
// another process may take it before Caddy binds it, in which case
// StartGlobals starts again on other ports.
func reservePort() (port int, release func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, func() {}, nil
}
