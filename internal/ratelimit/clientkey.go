package ratelimit

import "net/netip"

// ClientKey is the key a per-client limit counts addr under: the address
// itself for IPv4, and the /64 prefix for IPv6, since one host or one
// customer of an ISP usually holds a whole /64 and could otherwise take a
// fresh bucket with every address in it. IPv4-mapped IPv6 addresses count
// as IPv4. Anything that is not an address is used as it is.
func ClientKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p.String()
}
