package admin

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"time"

	"github.com/fasthttp/websocket"
)

// The status page is self-contained: its HTML, CSS and script are in the
// binary and load nothing from the network.
//
//go:embed static
var staticFiles embed.FS

// statusEvery is how often the status page gets a new snapshot: twice a
// second, so a change shows well within a second.
const statusEvery = 500 * time.Millisecond

// statusPage serves the page, its files, and the snapshots: once as JSON
// (/status.json) and live over a WebSocket (/status/live), one every
// statusEvery.
type statusPage struct {
	t        Target
	upgrader websocket.Upgrader
}

func newStatusPage(t Target) *statusPage {
	// The default CheckOrigin refuses a page of another origin: a page
	// on the web cannot read the gateway's state through the browser of
	// someone who can reach the admin listener.
	return &statusPage{t: t, upgrader: websocket.Upgrader{ReadBufferSize: 512, WriteBufferSize: 16 << 10}}
}

func (s *statusPage) page() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		page, _ := staticFiles.ReadFile("static/index.html")
		w.Write(page)
	})
}

func (s *statusPage) static() http.Handler {
	sub, _ := fs.Sub(staticFiles, "static")
	return http.StripPrefix("/static/", http.FileServer(http.FS(sub)))
}

func (s *statusPage) json(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(s.t.Snapshot())
}

// live pushes a snapshot every statusEvery until the page goes away. The
// page sends nothing; reading is only for its close.
func (s *statusPage) live(w http.ResponseWriter, r *http.Request) {
	c, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	defer c.Close()
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			if _, _, err := c.NextReader(); err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(statusEvery)
	defer tick.Stop()
	for {
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := c.WriteJSON(s.t.Snapshot()); err != nil {
			return
		}
		select {
		case <-gone:
			return
		case <-tick.C:
		}
	}
}
