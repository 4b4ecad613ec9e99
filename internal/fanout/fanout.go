// Package fanout keeps, in one process, who waits on which topic, and wakes
// them. It is the local half of every notifier: the in-process one uses it
// alone, the Redis one feeds it what arrives from other instances.
package fanout

import "sync"

// Set is a set of subscriptions by topic. Its zero value is ready to use;
// it is safe for concurrent use.
//
// A topic has few subscribers (the tabs of one browser waiting on one
// login), so each topic keeps them in a short slice; a subscription costs a
// channel, its slot and its cancel function.
type Set struct {
	mu    sync.Mutex
	subs  map[string][]chan struct{}
	count int
}

// Subscribe registers interest in topic. The channel receives a value for
// every Wake of topic (or WakeAll) after Subscribe returns, coalesced: a
// value already waiting in its one-slot buffer covers later ones. cancel
// releases the subscription; calling it more than once is harmless.
func (s *Set) Subscribe(topic string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	if s.subs == nil {
		s.subs = make(map[string][]chan struct{})
	}
	s.subs[topic] = append(s.subs[topic], ch)
	s.count++
	s.mu.Unlock()
	return ch, func() { s.remove(topic, ch) }
}

// remove drops ch from topic's subscribers, if it is still there.
func (s *Set) remove(topic string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.subs[topic]
	for i, c := range list {
		if c != ch {
			continue
		}
		last := len(list) - 1
		list[i], list[last] = list[last], nil
		if last == 0 {
			delete(s.subs, topic)
		} else {
			s.subs[topic] = list[:last]
		}
		s.count--
		return
	}
}

// Wake signals every subscriber of topic without blocking.
func (s *Set) Wake(topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.subs[topic] {
		signal(ch)
	}
}

// WakeAll signals every subscriber of every topic, for when messages may
// have been missed and everyone should re-read what they wait on.
func (s *Set) WakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, list := range s.subs {
		for _, ch := range list {
			signal(ch)
		}
	}
}

// Len returns how many subscriptions are open.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
