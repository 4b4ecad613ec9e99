package wechattest

import (
	"errors"
	"testing"
	"time"
)

// TestIPNeedsConfirmation walks WeChat's risky-IP confirmation: 89503 once,
// 89501 while the admin has not answered, 89507 for an hour after a
// refusal, 89506 for a day after a second refusal within 24 hours, and
// normal service once the admin approves.
func TestIPNeedsConfirmation(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock()}, "", Plaintext)
	if err := s.ConfirmIP(true); !errors.Is(err, ErrNoConfirmationPending) {
		t.Fatalf("ConfirmIP with nothing pending: %v", err)
	}
	s.SetIPStatus(IPNeedsConfirmation)
	if err := s.ConfirmIP(false); !errors.Is(err, ErrNoConfirmationPending) {
		t.Fatalf("ConfirmIP before WeChat asked: %v", err)
	}
	wantErrcode(t, fetchClassic(t, s), 89503)
	wantErrcode(t, fetchClassic(t, s), 89501)
	wantErrcode(t, fetchStable(t, s, false), 89501)

	// A refusal blocks the IP for an hour; then WeChat asks again.
	if err := s.ConfirmIP(false); err != nil {
		t.Fatal(err)
	}
	wantErrcode(t, fetchClassic(t, s), 89507)
	s.Advance(59 * time.Minute)
	wantErrcode(t, fetchStable(t, s, false), 89507)
	s.Advance(time.Minute)
	wantErrcode(t, fetchClassic(t, s), 89503)

	// A second refusal within 24 hours blocks it for a day.
	if err := s.ConfirmIP(false); err != nil {
		t.Fatal(err)
	}
	wantErrcode(t, fetchClassic(t, s), 89506)
	s.Advance(23 * time.Hour)
	wantErrcode(t, fetchClassic(t, s), 89506)
	s.Advance(time.Hour)
	wantErrcode(t, fetchClassic(t, s), 89503)

	// The earlier refusals are over a day old: this one blocks for an hour.
	if err := s.ConfirmIP(false); err != nil {
		t.Fatal(err)
	}
	wantErrcode(t, fetchClassic(t, s), 89507)
	s.Advance(time.Hour)
	wantErrcode(t, fetchClassic(t, s), 89503)

	// Approval whitelists the IP.
	if err := s.ConfirmIP(true); err != nil {
		t.Fatal(err)
	}
	wantErrcode(t, fetchClassic(t, s), 0)
	wantErrcode(t, fetchStable(t, s, false), 0)
}

// TestIPStatusOrder: the credentials are checked before the IP, and
// SetIPStatus starts afresh.
func TestIPStatusOrder(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Plaintext)
	s.SetIPStatus(IPNotWhitelisted)
	wantErrcode(t, get(t, s.URL+"/cgi-bin/token?grant_type=client_credential&appid="+oaID+"&secret=wrong"), 40125)
	wantErrcode(t, get(t, s.URL+"/cgi-bin/token?grant_type=client_credential&appid=wxnope&secret=x"), 40013)
	wantErrcode(t, fetchClassic(t, s), 40164)

	s.SetIPStatus(IPNeedsConfirmation)
	wantErrcode(t, fetchClassic(t, s), 89503)
	s.SetIPStatus(IPNeedsConfirmation)
	wantErrcode(t, fetchClassic(t, s), 89503)
	s.SetIPStatus(IPWhitelisted)
	wantErrcode(t, fetchClassic(t, s), 0)
}
