// Package fanout keeps, in one process, who waits on which topic, and wakes
// them. It is the local half of every notifier: the in-process one uses it
// alone, the Redis one feeds it what arrives from other instances.
package fanout

import "sync"

// Set is a set of subscriptions by topic. Its zero value is ready to use;
// it is safe for concurrent use.
type Set struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

// Subscribe registers interest in topic. The channel receives a value for
// every Wake of topic (or WakeAll) after Subscribe returns, coalesced: a
// value already waiting in its one-slot buffer covers later ones. cancel
// releases the subscription; calling it more than once is harmless.
func (s *Set) Subscribe(topic string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	if s.subs == nil {
		s.subs = make(map[string]map[chan struct{}]struct{})
	}
	set := s.subs[topic]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		s.subs[topic] = set
	}
	set[ch] = struct{}{}
	s.mu.Unlock()

	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if set := s.subs[topic]; set != nil {
				delete(set, ch)
				if len(set) == 0 {
					delete(s.subs, topic)
				}
			}
		})
	}
}

// Wake signals every subscriber of topic without blocking.
func (s *Set) Wake(topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs[topic] {
		signal(ch)
	}
}

// WakeAll signals every subscriber of every topic, for when messages may
// have been missed and everyone should re-read what they wait on.
func (s *Set) WakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, set := range s.subs {
		for ch := range set {
			signal(ch)
		}
	}
}

// Len returns how many subscriptions are open.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0
	for _, set := range s.subs {
		total += len(set)
	}
	return total
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
