// Command wsgate runs the WebSocket-aware reverse proxy gateway.
//
//	wsgate -config wsgate.yaml         run; SIGHUP reloads the file in place, SIGUSR1 reopens the log files
//	wsgate -watch -config wsgate.yaml  run, and reload whenever the file's content changes
//	wsgate -check -config wsgate.yaml  validate the file and exit 0 or 1, like nginx -t
//	wsgate -demo                       run on 127.0.0.1:8080 with two built-in upstreams
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/demo"
	"github.com/wsgate/wsgate/proxy"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsgate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "wsgate.yaml", "configuration file")
	check := fs.Bool("check", false, "validate the configuration, print \"ok\" or the errors, and exit")
	demoMode := fs.Bool("demo", false, "run on the demo address with two built-in upstreams; no config file")
	demoListen := fs.String("listen", "127.0.0.1:8080", "listen address of -demo")
	watch := fs.Bool("watch", false, "reload the configuration whenever the file's content changes (checked every 2s)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "wsgate", version)
		return 0
	}

	var cfg *config.Config
	if *demoMode {
		ups, err := demo.Start(2)
		if err != nil {
			fmt.Fprintln(stderr, "wsgate: demo upstreams:", err)
			return 1
		}
		defer func() {
			for _, u := range ups {
				u.Close()
			}
		}()
		cfg = demoConfig(*demoListen, ups)
	}
	var loaded []byte // the digest of the file as loaded, for -watch
	if !*demoMode {
		loaded = digest(*configPath)
		var err error
		cfg, err = config.Load(*configPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		for _, w := range cfg.Warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		if *check {
			fmt.Fprintln(stdout, "ok")
			return 0
		}
	}

	opts := proxy.Options{Stdout: stdout, Stderr: stderr}
	if !*demoMode {
		opts.ConfigPath = *configPath
	}
	gw, err := proxy.New(cfg, opts)
	if err != nil {
		fmt.Fprintln(stderr, "wsgate:", err)
		return 1
	}
	// Catch signals before binding: "listening on" tells supervisors and
	// tests the gateway is up, and a HUP or TERM sent right after it must
	// not meet Go's default action (exit without draining).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	if err := gw.Start(); err != nil {
		signal.Stop(sigs)
		fmt.Fprintln(stderr, "wsgate:", err)
		return 1
	}
	for _, a := range gw.Addrs() {
		fmt.Fprintf(stderr, "wsgate: listening on %s\n", a)
	}
	if a := gw.AdminAddr(); a != nil {
		fmt.Fprintf(stderr, "wsgate: admin on http://%s/\n", a)
	}
	if *demoMode {
		fmt.Fprintf(stderr, "wsgate: demo page at http://%s/\n", gw.Addrs()[0])
	}
	stopWatch := func() {}
	if *watch && !*demoMode {
		ctx, cancel := context.WithCancel(context.Background())
		stopWatch = cancel
		go watchFile(ctx, *configPath, loaded, watchInterval, func() {
			fmt.Fprintf(stderr, "wsgate: %s changed: reloading\n", *configPath)
			gw.Reload() // the error log says how it went
		})
	}

	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP:
			// The error log says how the reload went.
			if _, err := gw.Reload(); err != nil && *demoMode {
				fmt.Fprintln(stderr, "wsgate: SIGHUP:", err)
			}
			continue
		case syscall.SIGUSR1:
			gw.ReopenLogs() // after logrotate; the error log says how it went
			continue
		}
		break
	}
	stopWatch()
	fmt.Fprintf(stderr, "wsgate: draining %d tunnels (up to %v; send the signal again to close them now)\n",
		gw.ActiveTunnels(), cfg.Timeouts.Drain.Std())
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Signals keep being caught while draining: a second TERM/INT cuts
		// the drain short (tunnels are closed, the process still exits
		// cleanly); a HUP or USR1 must not kill a draining gateway.
		for sig := range sigs {
			if sig != syscall.SIGHUP && sig != syscall.SIGUSR1 {
				fmt.Fprintln(stderr, "wsgate: second", sig, "- closing the remaining tunnels")
				cancel()
				return
			}
		}
	}()
	if err := gw.Shutdown(ctx); err != nil {
		fmt.Fprintln(stderr, "wsgate:", err)
	}
	cancel()
	fmt.Fprintln(stderr, "wsgate: stopped")
	return 0
}

// demoDrain is how long -demo waits for open pages on SIGINT/SIGTERM.
const demoDrain = 2 * time.Second

// demoConfig fronts the demo upstreams with one catch-all route.
func demoConfig(listen string, ups []*demo.Upstream) *config.Config {
	cfg := &config.Config{
		Listeners: []config.Listener{{Address: listen}},
		Routes:    []config.Route{{Path: "/", Upstream: "demo"}},
		Upstreams: map[string]*config.Upstream{"demo": {}},
		// A demo is stopped with Ctrl-C while its page is usually still
		// open; the default 30 s drain would make that look like a hang.
		Timeouts: config.Timeouts{Drain: config.Duration(demoDrain)},
	}
	for _, u := range ups {
		cfg.Upstreams["demo"].Servers = append(cfg.Upstreams["demo"].Servers, config.Server{Address: u.Addr})
	}
	cfg.ApplyDefaults()
	return cfg
}
