package bigcachestore

import (
	"encoding/binary"
	"errors"
)

// An entry is what the store hands bigcache for one key:
//
//	expiry  int64, Unix nanoseconds, little endian
//	keyLen  uint16, little endian
//	key     keyLen bytes: the store writes the key's digest (Store.digest)
//	value   the rest
//
// bigcache knows neither the expiry (its LifeWindow is per class and its
// Get does not check it) nor the real key (it is given the keyed hash), so
// the store checks both on every read.
const entryHeaderSize = 8 + 2

// errCorrupt means an entry is shorter than its header says. The store
// only reads entries it wrote itself, so this is a bug, not bad input.
var errCorrupt = errors.New("bigcachestore: corrupt entry")

// appendEntry appends the encoding of an entry to dst.
// expires is in Unix nanoseconds.
func appendEntry(dst []byte, key string, expires int64, value []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(expires))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(key)))
	dst = append(dst, key...)
	return append(dst, value...)
}

// decodedEntry is an entry split into its parts. value aliases the encoded
// bytes.
type decodedEntry struct {
	expires int64 // Unix nanoseconds
	key     []byte
	value   []byte
}

// decodeEntry splits b into its parts without copying.
func decodeEntry(b []byte) (decodedEntry, error) {
	if len(b) < entryHeaderSize {
		return decodedEntry{}, errCorrupt
	}
	keyEnd := entryHeaderSize + int(binary.LittleEndian.Uint16(b[8:]))
	if len(b) < keyEnd {
		return decodedEntry{}, errCorrupt
	}
	return decodedEntry{
		expires: int64(binary.LittleEndian.Uint64(b)),
		key:     b[entryHeaderSize:keyEnd:keyEnd],
		value:   b[keyEnd:],
	}, nil
}

// liveAt reports whether the entry has not expired at now, in Unix
// nanoseconds. An entry expires at its deadline exactly, as in Redis.
func (e decodedEntry) liveAt(now int64) bool {
	return now < e.expires
}

// entryExpiry returns an entry's expiry without decoding the rest; ok is
// false for a corrupt entry.
func entryExpiry(b []byte) (expires int64, ok bool) {
	if len(b) < entryHeaderSize {
		return 0, false
	}
	return int64(binary.LittleEndian.Uint64(b)), true
}
