package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// commandTimeout bounds one command sent by Command, dial included.
const commandTimeout = 2 * time.Second

// maxReplyElements bounds the elements of one reply Command reads, so
// that a garbled length cannot make it allocate without bound.
const maxReplyElements = 1 << 16

// Command sends one command to the server at addr on a connection of its
// own and returns the reply flattened: a status, integer or bulk string is
// one element, an array its elements in order (nested arrays flattened
// too), a nil reply none. An error reply is returned as an error. It needs
// no client library, so the helpers work whatever client a test uses.
func Command(addr string, args ...string) ([]string, error) {
	replies, err := Commands(addr, args)
	if err != nil {
		return nil, err
	}
	return replies[0], nil
}

// Commands sends cmds to the server at addr, in order, on one connection
// of its own (as WAIT needs: it counts the replicas that have the writes
// of its connection), and returns their replies as Command does. The
// first error reply ends it.
func Commands(addr string, cmds ...[]string) ([][]string, error) {
	conn, err := net.DialTimeout("tcp", addr, commandTimeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return nil, err
	}
	var b strings.Builder
	for _, args := range cmds {
		if len(args) == 0 {
			return nil, errors.New("empty command")
		}
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	r := bufio.NewReader(conn)
	replies := make([][]string, len(cmds))
	for i, args := range cmds {
		budget := maxReplyElements
		if err := readReply(r, &replies[i], &budget); err != nil {
			return nil, fmt.Errorf("%s to %s: %w", strings.ToUpper(args[0]), addr, err)
		}
	}
	return replies, nil
}

// readReply appends one RESP2 reply to out, spending one element of
// budget per value.
func readReply(r *bufio.Reader, out *[]string, budget *int) error {
	if *budget--; *budget < 0 {
		return errors.New("reply too long")
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return errors.New("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		*out = append(*out, line[1:])
		return nil
	case '-':
		return errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n > 512<<20 {
			return fmt.Errorf("bad bulk length %q", line)
		}
		if n < 0 {
			return nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		*out = append(*out, string(buf[:n]))
		return nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n > maxReplyElements {
			return fmt.Errorf("bad array length %q", line)
		}
		for range max(n, 0) {
			if err := readReply(r, out, budget); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unexpected reply %q", line)
}

// info returns the fields of INFO section on the server at addr.
func info(addr, section string) (map[string]string, error) {
	reply, err := Command(addr, "INFO", section)
	if err != nil {
		return nil, err
	}
	if len(reply) != 1 {
		return nil, fmt.Errorf("INFO %s to %s: %d replies", section, addr, len(reply))
	}
	return fields(reply[0], ":"), nil
}

// fields parses "key<sep>value" lines, skipping comments.
func fields(text, sep string) map[string]string {
	m := map[string]string{}
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, sep); ok {
			m[k] = v
		}
	}
	return m
}

// waitUntil calls cond every pollInterval until it returns nil or limit
// has passed; it then returns cond's last error.
func waitUntil(limit time.Duration, cond func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(pollInterval)
	}
}

// pollInterval is how often the helpers look again at a state they wait
// for.
const pollInterval = 50 * time.Millisecond
