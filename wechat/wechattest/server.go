package wechattest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
)

// Server is a [Platform] listening on a local loopback address, for tests.
type Server struct {
	*Platform
	// URL is the server's base URL, "http://127.0.0.1:port", with no
	// trailing slash. Endpoint returns it for all three WeChat hosts.
	URL string

	srv *httptest.Server
}

// NewServer starts a platform on a local httptest server. cfg.BaseURL
// defaults to the server's URL. Like httptest.NewServer it panics if the
// server cannot start; the caller must call Close.
func NewServer(cfg Config) *Server {
	// The listener exists before the server starts, so the platform can
	// know its own URL without racing the first request.
	srv := httptest.NewUnstartedServer(nil)
	if cfg.BaseURL == "" {
		cfg.BaseURL = "http://" + srv.Listener.Addr().String()
	}
	p, err := New(cfg)
	if err != nil {
		srv.Close()
		panic(fmt.Sprintf("wechattest: NewServer: %v", err))
	}
	srv.Config.Handler = p
	srv.Start()
	return &Server{Platform: p, URL: srv.URL, srv: srv}
}

// Client returns an HTTP client for talking to the server.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Close shuts the server down, waiting for outstanding requests, and closes
// the connections the platform opened for pushes.
func (s *Server) Close() {
	s.srv.Close()
	if s.ownTransport != nil {
		s.ownTransport.CloseIdleConnections()
	}
}
