// Package admin serves wsgate's admin endpoints on a listener of their
// own, in plain HTTP: liveness (/healthz), readiness (/readyz),
// configuration reload (POST /reload), metrics (/metrics) and the live
// status page (/). It knows nothing of proxying: the
// gateway it serves is a Target.
package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"time"
)

// Target is what the admin endpoints report on and act on.
type Target interface {
	// Reload reads the configuration file again and puts it in service;
	// it returns what changed, or why nothing did. An error with a
	// Status() int method gives the HTTP status to answer (503 while
	// draining, say); any other error is the file's fault: 400.
	Reload() (string, error)
	// NotReady lists what keeps the gateway from serving (a pool with no
	// usable server, a drain under way); empty when ready.
	NotReady() []string
	// Snapshot is the state the status page shows, made for JSON.
	Snapshot() any
	// Metrics serves GET /metrics (the Prometheus text format).
	Metrics() http.Handler
}

// Server is the admin HTTP server on its own listener.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds address and serves the admin endpoints of t in the
// background.
func Listen(address string, t Target, errorLog io.Writer) (*Server, error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, srv: &http.Server{
		Handler:           Handler(t),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          newLogger(errorLog),
	}}
	go s.srv.Serve(ln)
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting and waits up to ctx for the requests in flight
// (a POST /reload, say) to be answered.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	return err
}

// Handler returns the admin endpoints of t.
func Handler(t Target) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		// The process runs and answers: that is all liveness asks.
		text(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if missing := t.NotReady(); len(missing) > 0 {
			text(w, http.StatusServiceUnavailable, "not ready:\n"+strings.Join(missing, "\n"))
			return
		}
		text(w, http.StatusOK, "ready")
	})
	mux.Handle("GET /metrics", t.Metrics())
	status := newStatusPage(t)
	mux.Handle("GET /{$}", status.page())
	mux.Handle("GET /static/", status.static())
	mux.HandleFunc("GET /status.json", status.json)
	mux.HandleFunc("GET /status/live", status.live)
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		summary, err := t.Reload()
		if err != nil {
			status := http.StatusBadRequest
			var s interface{ Status() int }
			if errors.As(err, &s) {
				status = s.Status()
			}
			text(w, status, "reload failed; the configuration in service is unchanged:\n"+err.Error())
			return
		}
		text(w, http.StatusOK, "reload ok: "+summary)
	})
	return mux
}

func text(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintln(w, body)
}

// newLogger sends net/http's own messages (a client that sent garbage)
// to the gateway's error log, marked as the admin listener's.
func newLogger(w io.Writer) *log.Logger {
	if w == nil {
		w = io.Discard
	}
	return log.New(w, "wsgate: admin: ", log.LstdFlags)
}
